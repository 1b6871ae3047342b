"""The profile (contact details, preferences) and a subscription's sessions and usage, each the customer's own."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Customer, Subscription
from isp_admin.models.network import RadAcct
from isp_admin.models.portal import PortalAccount
from tests.portal.conftest import portal_customer, portal_sign_in


def test_the_profile_saves_contact_details_and_preferences(app, client):
    customer, account = portal_customer(email="old@mail.example")
    portal_sign_in(client, customer.account_number)
    saved = client.post("/portal/profile", data={"email": " New@Mail.example ", "phone": "+254 711 000 111",
                                                 "email_receipts": "y"})
    assert saved.status_code == 302
    db.session.rollback()
    fresh, prefs = db.session.get(Customer, customer.id), db.session.get(PortalAccount, account.id)
    assert (fresh.email, fresh.phone) == ("new@mail.example", "+254 711 000 111")
    assert (prefs.email_reminders, prefs.email_receipts) == (False, True)
    [event] = db.session.scalars(db.select(AuditEvent).where(AuditEvent.action == "portal_account.profile_update"))
    assert event.actor_label == f"portal:{customer.account_number}"
    assert event.after["email"] == "new@mail.example" and event.before["email"] == "old@mail.example"


def test_bad_contact_details_are_refused_on_the_form(app, client):
    customer, _ = portal_customer(email="kept@mail.example")
    portal_sign_in(client, customer.account_number)
    for data in ({"email": "not an email"}, {"email": "ok@mail.example", "phone": "call me maybe"},
                 {"email": "x" * 300 + "@mail.example"}):
        assert client.post("/portal/profile", data=data).status_code == 422, data
    db.session.rollback()
    assert db.session.get(Customer, customer.id).email == "kept@mail.example"


def _session(username: str, ip: str, n: int, *, open_: bool) -> None:
    started = datetime.now(UTC) - timedelta(hours=2)
    db.session.add(RadAcct(acctsessionid=f"P{n}", acctuniqueid=f"portal-{n}", username=username,
                           nasipaddress="192.0.2.1", framedipaddress=ip, acctstarttime=started,
                           acctstoptime=None if open_ else started + timedelta(hours=1),
                           acctinputoctets=2 * 10**9, acctoutputoctets=30 * 10**9))
    db.session.commit()


def test_usage_shows_the_customers_own_sessions_and_the_cap(app, client, world):
    a, b = world
    sub_a, sub_b = db.session.get(Subscription, a.subscription), db.session.get(Subscription, b.subscription)
    _session(sub_a.pppoe_username, "100.64.0.10", 1, open_=True)
    _session(sub_b.pppoe_username, "100.64.0.99", 2, open_=False)
    portal_sign_in(client, a.customer.account_number)
    page = client.get(f"/portal/usage/{a.subscription}").get_data(as_text=True)
    assert "100.64.0.10" in page and "online now" in page.lower()
    assert "100.64.0.99" not in page
    assert "Online now" in client.get("/portal/").get_data(as_text=True)
    assert client.get(f"/portal/usage/{b.subscription}").status_code == 404

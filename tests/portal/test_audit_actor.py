"""A customer's own portal actions are audited as that customer (actor_type "customer", their id), and staff see
them on the customer's history with a link to the customer."""
from __future__ import annotations

import re

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent
from tests.portal.conftest import portal_customer, portal_sign_in
from tests.support.auth import unique_address


def _events(action: str) -> list[AuditEvent]:
    db.session.rollback()
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def test_sign_in_and_a_profile_change_are_the_customers_own(app, client):
    customer, _ = portal_customer(email="before@mail.example")
    portal_customer()  # someone else, so the id is not the only one there is
    address = unique_address()
    assert portal_sign_in(client, customer.account_number, environ_base=address).status_code == 302
    saved = client.post("/portal/profile", data={"email": "after@mail.example", "email_receipts": "y"},
                        environ_base=address)
    assert saved.status_code == 302
    for action in ("portal_account.login", "portal_account.profile_update"):
        [event] = _events(action)
        assert (event.actor_type, event.actor_id, event.actor_label, event.ip) == (
            "customer", customer.id, f"portal:{customer.account_number}", address["REMOTE_ADDR"]), action
        assert event.customer_id == customer.id


def test_an_anonymous_visitor_is_still_the_system(app, client):
    customer, _ = portal_customer(email="asker@mail.example")
    assert client.post("/portal/password-link", data={"identifier": customer.account_number}).status_code == 302
    [event] = _events("portal_account.link_sent")
    assert (event.actor_type, event.actor_id, event.actor_label) == ("system", None, "portal:anonymous")


def test_staff_see_the_customer_as_the_actor_with_a_link_to_them(app, client, login):
    customer, _ = portal_customer()
    portal_sign_in(app.test_client(), customer.account_number)
    login("support")
    page = client.get(f"/customers/{customer.id}")
    assert page.status_code == 200
    row = re.search(r"<tr>(?:(?!</tr>).)*portal_account\.login(?:(?!</tr>).)*</tr>", page.get_data(as_text=True), re.S)
    assert row, "the sign-in is on the customer's history"
    assert f'<a href="/customers/{customer.id}">portal:{customer.account_number}</a>' in row.group(0)
    assert ">customer</span>" in row.group(0)

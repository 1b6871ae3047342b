"""Network → Billing ↔ network: the page lists exactly the mismatches, in words, with the last nightly check and
the failed CoA requests; each button queues its fix with one audit event; the page's queries do not grow."""
from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CoaRequest, Nas
from isp_admin.models.base import utcnow
from isp_admin.services.network import reconcile
from tests.support.mismatches import attempt, change, online, plant_every_kind, subscription

URL = "/network/mismatches"


def page(client) -> str:
    response = client.get(URL)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def listed(html: str) -> set[tuple[str, str]]:
    """(kind, login) of every row, read from the tables (each table carries its kind)."""
    rows = set()
    for kind, body in re.findall(r'<table [^>]*data-kind="(\w+)">(.*?)</table>', html, re.S):
        rows.update((kind, login) for login in re.findall(r'<tr data-login="([^"]*)">', body))
    return rows


def audit_since(first_id: int) -> list[tuple[str, int]]:
    return db.session.execute(select(AuditEvent.action, AuditEvent.actor_id).where(AuditEvent.id > first_id)
                              .order_by(AuditEvent.id)).all()


def last_audit_id() -> int:
    return db.session.scalar(select(func.coalesce(func.max(AuditEvent.id), 0)))


def test_clean_data_says_billing_and_the_network_agree(client, login):
    login("readonly")
    html = page(client)
    assert "Billing and the network agree" in html and "No nightly check has run yet" in html
    assert listed(html) == set()
    assert 'class="nav-link active" href="/network/mismatches"' in html


def test_the_page_lists_exactly_the_mismatches_in_words(client, login):
    expected = plant_every_kind()
    login("support")
    html = page(client)
    assert listed(html) == expected
    assert "Billing and the network agree" not in html
    assert "Customer manual" in html and "suspended by hand" in html and "No subscription has the login ghost" in html
    assert "Online under an old state" in html and html.count("Disconnect</button>") == 8  # stale + unknown + conflict
    assert html.count("Acknowledge</button>") == 2


def test_the_last_nightly_check_and_failed_coa_requests_are_shown(client, login):
    online("ghost", "s-ghost", utcnow() - timedelta(hours=1))
    reconcile.check(limit=10, triggered_by="scheduler")
    db.session.add(CoaRequest(nas_address="192.0.2.1", username="zoe", kind="disconnect", reason="rejected",
                              status="failed", attempts=8))
    db.session.commit()
    login("readonly")
    html = page(client)
    assert re.search(r"Last nightly check \d{4}-\d\d-\d\d \d\d:\d\d UTC: found 1\s+mismatch\.", html)
    assert 'href="/network/?status=failed" id="coa-failed">1 CoA request failed</a>' in html
    assert "Disconnect</button>" not in html  # read-only: no fixes offered


def test_disconnect_from_the_page_queues_it_once_with_one_audit_event(client, login):
    db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", secret="nas-secret", coa_port=3799))
    db.session.commit()
    session = online("ghost", "s-ghost", utcnow() - timedelta(hours=1))
    user = login("support")
    signed_in = last_audit_id()
    response = client.post(f"/network/mismatches/sessions/{session.radacctid}/disconnect")
    assert response.status_code == 302 and response.headers["Location"].endswith(URL)
    assert db.session.execute(select(CoaRequest.kind, CoaRequest.reason, CoaRequest.username, CoaRequest.status)
                              ).all() == [("disconnect", "reconcile", "ghost", "pending")]
    assert audit_since(signed_in) == [("session.disconnect", user.id)]
    html = page(client)
    assert "Disconnect queued" in html and "fix on its way" in html

    client.post(f"/network/mismatches/sessions/{session.radacctid}/disconnect")  # a second click
    assert "already on its way" in page(client)
    assert len(db.session.scalars(select(CoaRequest)).all()) == 1
    assert audit_since(signed_in) == [("session.disconnect", user.id)]


def test_resend_and_acknowledge_from_the_page(client, login):
    db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", secret="nas-secret", coa_port=3799))
    db.session.commit()
    t0 = utcnow() - timedelta(hours=3)
    walled = subscription("walled")
    online("walled", "s-walled", t0)
    change(walled.id, t0 + timedelta(hours=1), status="suspended", suspension_reason="non_payment")
    refused = subscription("refused")
    attempt("refused", "Access-Reject", t0)
    user = login("admin")
    signed_in = last_audit_id()

    assert client.post(f"/network/mismatches/subscriptions/{walled.id}/resend").status_code == 302
    assert db.session.execute(select(CoaRequest.kind, CoaRequest.reason)).all() == [("disconnect", "resend")]
    assert client.post(f"/network/mismatches/subscriptions/{refused.id}/acknowledge").status_code == 302
    assert audit_since(signed_in) == [("subscription.coa_resend", user.id), (reconcile.ACKNOWLEDGED, user.id)]
    html = page(client)
    assert listed(html) == {("stale_session", "walled")} and "fix on its way" in html

    client.post(f"/network/mismatches/subscriptions/{refused.id}/acknowledge")  # nothing left to acknowledge
    assert "has not refused this subscription" in page(client)
    assert len(audit_since(signed_in)) == 2


def test_the_page_runs_the_same_number_of_queries_however_much_it_lists(client, login, query_counter):
    login("support")
    page(client)  # warm: the user, the session, the cache
    with query_counter() as clean:
        page(client)
    plant_every_kind()
    with query_counter() as planted:
        html = page(client)
    assert len(listed(html)) == 10
    assert len(planted) == len(clean)

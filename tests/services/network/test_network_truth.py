"""Network truth with the real thing: FreeRADIUS reads our views and answers exactly as billing says, through
every state change; the fake NAS gets exactly one Disconnect (or CoA) per change; a NAS that is down is retried."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select, text

from isp_admin.extensions import db
from isp_admin.models import CoaRequest, Nas, NetworkChange, RadAcct, RadPostAuth
from isp_admin.models.base import utcnow
from isp_admin.services.billing import collections, invoices, payments
from isp_admin.services.customers import subscriptions
from isp_admin.services.network import coa, credentials, settings
from isp_admin.unit_of_work import commit_step
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.support.fake_nas import FakeNas, closed_udp_port

D = date
NAS_SECRET = "nas-secret"


@pytest.fixture
def nas(app):
    """A fake NAS on loopback, registered as the router 127.0.0.1 (where the test's accounting comes from)."""
    fake = FakeNas(NAS_SECRET).start()
    db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", type="mikrotik", secret=NAS_SECRET,
                       coa_port=fake.port))
    db.session.commit()
    yield fake
    fake.stop()


@pytest.fixture
def world(app, freeradius, monkeypatch):
    """One customer on HOME50 (50 down / 10 up) with login zoe, a static IP and a password."""
    monkeypatch.setattr(subscriptions, "today", lambda: D(2026, 3, 20))
    plan = PlanFactory(code="HOME50", download_mbps=50, upload_mbps=10, monthly_price_cents=3000, tax_rate_bp=0)
    fast = PlanFactory(code="FIBRE200", download_mbps=200, upload_mbps=40, monthly_price_cents=6000, tax_rate_bp=0)
    customer = CustomerFactory()
    sub = SubscriptionFactory(customer=customer, plan=plan, pppoe_username="zoe", static_ip="100.64.0.9",
                              start_date=D(2026, 1, 1), billing_day=1, next_bill_date=D(2026, 4, 1))
    db.session.commit()
    password = credentials.set_password(sub.id)
    db.session.commit()
    return {"sub": sub, "customer": customer, "plan": plan, "fast": fast, "password": password,
            "radius": freeradius.client()}


def dispatch() -> dict:
    return coa.dispatch(commit_step)


def overdue_invoice(customer_id: int, cents: int = 3000):
    draft = invoices.create_draft(customer_id, [{"description": "Service", "quantity": 1, "unit_price_cents": cents,
                                                 "tax_rate_bp": 0}], D(2026, 3, 1))
    invoice = invoices.issue(draft.id, D(2026, 3, 1))
    db.session.commit()
    assert collections.run_mark_overdue(D(2026, 3, 16)) == 1
    db.session.commit()
    return invoice


def test_an_active_login_is_accepted_with_its_plan_rate_and_static_ip_by_pap_and_chap(world):
    for method in ("pap", "chap"):
        answer = world["radius"].authenticate("zoe", world["password"], method)
        assert answer.accepted, method
        assert answer.first("Mikrotik-Rate-Limit") == "10M/50M"  # rx/tx from the router: upload first
        assert answer.first("Framed-IP-Address") == "100.64.0.9"
    assert not world["radius"].authenticate("zoe", world["password"] + "x").accepted
    assert not world["radius"].authenticate("nobody", world["password"]).accepted


def test_no_password_is_kept_from_any_login_attempt(world):
    world["radius"].authenticate("zoe", world["password"])
    world["radius"].authenticate("zoe", "typo-password")
    db.session.expire_all()
    rows = db.session.execute(select(RadPostAuth.reply, RadPostAuth.pass_)).all()
    assert sorted(r.reply for r in rows) == ["Access-Accept", "Access-Reject"]
    assert all(r.pass_ is None for r in rows)
    # Whatever FreeRADIUS's query sends, the column stays empty (a trigger, and a CHECK behind it).
    db.session.execute(text("INSERT INTO radpostauth (username, pass, reply) VALUES ('x', 'secret', 'Access-Reject')"))
    assert db.session.scalar(text("SELECT pass FROM radpostauth WHERE username = 'x'")) is None
    db.session.rollback()


def test_overdue_to_walled_garden_to_paid_follows_billing_with_one_disconnect_each(world, nas):
    radius, sub = world["radius"], world["sub"]
    radius.account("Start", "zoe", "S1", framed_ip="100.64.0.9")
    invoice = overdue_invoice(world["customer"].id)

    # The nightly run suspends set-based after grace: the walled garden, without the static IP.
    assert collections.run_enforce_overdue(D(2026, 3, 23)) == 1
    db.session.commit()
    walled = radius.authenticate("zoe", world["password"])
    assert walled.accepted
    assert walled.first("Framed-Pool") == "walled-garden"
    assert walled.first("Mikrotik-Address-List") == "suspended"
    assert walled.first("Mikrotik-Rate-Limit") == "256k/256k"
    assert walled.first("Framed-IP-Address") is None

    counts = dispatch()
    assert counts["changes"] == 1 and counts["acked"] == 1
    received = nas.wait_for(1)
    assert [(r.kind, r.first("User-Name"), r.first("Acct-Session-Id"), r.first("Framed-IP-Address"))
            for r in received] == [("disconnect", "zoe", "S1", "100.64.0.9")]
    assert dispatch() == {"changes": 0, "acked": 0, "retry": 0, "failed": 0, "fallback": 0, "skipped": 0}

    # The NAS ends S1; the customer comes back into the walled garden as S2, then pays.
    radius.account("Stop", "zoe", "S1", framed_ip="100.64.0.9", session_time=600)
    radius.account("Start", "zoe", "S2", framed_ip="10.99.0.5")
    payments.record_payment(world["customer"].id, None, "cash", D(2026, 3, 24), D(2026, 3, 24), invoice_id=invoice.id)
    db.session.commit()
    back = radius.authenticate("zoe", world["password"])  # the same minute: nothing waits for a job
    assert back.accepted and back.first("Mikrotik-Rate-Limit") == "10M/50M"
    assert back.first("Framed-IP-Address") == "100.64.0.9" and back.first("Framed-Pool") is None

    assert dispatch()["acked"] == 1
    received = nas.wait_for(2)
    assert [(r.kind, r.first("Acct-Session-Id")) for r in received] == [("disconnect", "S1"), ("disconnect", "S2")]
    assert db.session.scalar(select(func.count()).select_from(CoaRequest)) == 2
    assert {r.reason for r in db.session.scalars(select(CoaRequest))} == {"walled_garden", "reactivated"}
    assert sub.id in set(db.session.scalars(select(CoaRequest.subscription_id)))


def test_manual_suspension_and_cancellation_are_rejected(world, nas):
    radius, sub = world["radius"], world["sub"]
    subscriptions.suspend(sub.id, "manual")
    db.session.commit()
    answer = radius.authenticate("zoe", world["password"])
    assert not answer.accepted and answer.first("Reply-Message") == "Service suspended: please contact us."
    subscriptions.resume(sub.id)
    db.session.commit()
    assert radius.authenticate("zoe", world["password"]).accepted
    subscriptions.cancel(sub.id, D(2026, 3, 20))
    db.session.commit()
    assert not radius.authenticate("zoe", world["password"]).accepted


def test_the_policy_per_reason_is_the_isps_choice(world):
    radius, sub = world["radius"], world["sub"]
    settings.set_policy("manual", "walled_garden")
    subscriptions.suspend(sub.id, "manual")
    db.session.commit()
    assert radius.authenticate("zoe", world["password"]).first("Framed-Pool") == "walled-garden"
    settings.set_policy("manual", "reject")
    db.session.commit()
    assert not radius.authenticate("zoe", world["password"]).accepted


def test_a_plan_change_sends_one_coa_with_the_new_rate_and_the_next_login_carries_it(world, nas):
    radius, sub = world["radius"], world["sub"]
    radius.account("Start", "zoe", "S1", framed_ip="100.64.0.9")
    subscriptions.change_plan(sub.id, world["fast"].id)
    db.session.commit()
    assert radius.authenticate("zoe", world["password"]).first("Mikrotik-Rate-Limit") == "40M/200M"
    assert dispatch()["acked"] == 1
    [request] = nas.wait_for(1)
    assert request.kind == "coa" and request.first("Mikrotik-Rate-Limit") == "40M/200M"
    assert request.first("Acct-Session-Id") == "S1"
    assert nas.received == [request]


def test_a_nas_that_refuses_the_coa_gets_a_disconnect_instead(world, nas):
    radius, sub = world["radius"], world["sub"]
    radius.account("Start", "zoe", "S1", framed_ip="100.64.0.9")
    nas.answer = "nak"
    subscriptions.change_plan(sub.id, world["fast"].id)
    db.session.commit()
    counts = dispatch()
    assert counts["fallback"] == 1
    assert [r.kind for r in nas.wait_for(2)] == ["coa", "disconnect"]
    statuses = dict(db.session.execute(select(CoaRequest.kind, CoaRequest.status)).all())
    assert statuses == {"coa": "failed", "disconnect": "failed"}  # this NAS refuses both: it stays visible


def test_a_nas_that_is_down_is_retried_with_growing_waits_then_reached(app, world, nas):
    radius, sub = world["radius"], world["sub"]
    radius.account("Start", "zoe", "S1", framed_ip="100.64.0.9")
    up_port = nas.port
    db.session.execute(text("UPDATE nas SET coa_port = :p"), {"p": closed_udp_port()})
    db.session.commit()
    app.config["NETWORK_COA_TIMEOUT"] = 0.2
    subscriptions.suspend(sub.id, "manual")
    db.session.commit()

    now = utcnow()
    assert dispatch()["retry"] == 1
    request = db.session.scalar(select(CoaRequest))
    assert request.status == "pending" and request.attempts == 1 and "no answer" in request.last_error
    first_wait = request.next_attempt_at - now
    assert timedelta(seconds=29) <= first_wait <= timedelta(seconds=40)
    assert coa.send_due(commit_step)["retry"] == 0  # not due yet: nothing is sent early
    later = request.next_attempt_at + timedelta(seconds=1)
    assert coa.send_due(commit_step, now=later)["retry"] == 1
    db.session.expire_all()
    request = db.session.get(CoaRequest, request.id)
    assert request.attempts == 2 and request.next_attempt_at - later >= timedelta(seconds=59)
    assert nas.received == []

    db.session.execute(text("UPDATE nas SET coa_port = :p"), {"p": up_port})  # the router is back
    db.session.commit()
    assert coa.send_due(commit_step, now=request.next_attempt_at)["acked"] == 1
    assert [r.kind for r in nas.wait_for(1)] == ["disconnect"]
    db.session.expire_all()
    assert db.session.get(CoaRequest, request.id).status == "acked"


def test_a_request_that_runs_out_of_attempts_is_failed_visible_and_retryable(app, world, nas):
    world["radius"].account("Start", "zoe", "S1", framed_ip="100.64.0.9")
    db.session.execute(text("UPDATE nas SET coa_port = :p"), {"p": closed_udp_port()})
    db.session.commit()
    app.config.update(NETWORK_COA_TIMEOUT=0.1, NETWORK_COA_MAX_ATTEMPTS=2)
    subscriptions.suspend(world["sub"].id, "manual")
    db.session.commit()
    dispatch()
    request = db.session.scalar(select(CoaRequest))
    assert coa.send_due(commit_step, now=request.next_attempt_at)["failed"] == 1
    db.session.expire_all()
    request = db.session.get(CoaRequest, request.id)
    assert request.status == "failed" and "gave up after 2 attempts" in request.last_error
    assert coa.counts_by_status() == {"pending": 0, "failed": 1}

    db.session.execute(text("UPDATE nas SET coa_port = :p"), {"p": nas.port})
    coa.retry_request(request.id)
    db.session.commit()
    assert coa.send_due(commit_step)["acked"] == 1
    assert [r.kind for r in nas.wait_for(1)] == ["disconnect"]


def test_a_session_on_an_unknown_router_is_a_visible_failure_not_a_silent_drop(world):
    world["radius"].account("Start", "zoe", "S1", framed_ip="100.64.0.9")  # no NAS row for 127.0.0.1
    subscriptions.suspend(world["sub"].id, "manual")
    db.session.commit()
    assert dispatch()["changes"] == 1
    request = db.session.scalar(select(CoaRequest))
    assert request.status == "failed" and "No NAS record for 127.0.0.1" in request.last_error


def test_changes_without_an_open_session_send_nothing_and_every_change_is_captured_once(world, nas):
    sub = world["sub"]
    subscriptions.suspend(sub.id, "manual")
    subscriptions.resume(sub.id)
    db.session.commit()
    subscriptions.update_network(sub.id, "zoe", "100.64.0.10", None)
    db.session.commit()
    assert db.session.scalar(select(func.count()).select_from(NetworkChange)) == 3
    assert dispatch()["changes"] == 3
    assert nas.received == [] and db.session.scalar(select(func.count()).select_from(CoaRequest)) == 0
    assert db.session.scalar(select(func.count()).where(NetworkChange.processed_at.is_(None))) == 0


@pytest.mark.parametrize("first_login", [None, "oldname"])
def test_a_login_given_and_suspended_within_one_sweep_still_disconnects_its_session(world, nas, first_login):
    # The sweep collapses a subscription's changes from the state before the first; the first change here gave or
    # renamed the login, and a session under the new one was already open when the suspension came.
    customer = CustomerFactory()
    sub = SubscriptionFactory(customer=customer, plan=world["plan"], pppoe_username=first_login,
                              start_date=D(2026, 1, 1), billing_day=1, next_bill_date=D(2026, 4, 1))
    db.session.commit()
    assert dispatch()["changes"] == 0
    subscriptions.update_network(sub.id, "newbie", None, None)
    db.session.commit()
    world["radius"].account("Start", "newbie", "N1", framed_ip="100.64.0.77")
    subscriptions.suspend(sub.id, "manual")
    db.session.commit()
    counts = dispatch()
    assert counts["changes"] == 2 and counts["acked"] == 1
    [sent] = nas.wait_for(1)
    assert (sent.kind, sent.first("User-Name"), sent.first("Acct-Session-Id")) == ("disconnect", "newbie", "N1")
    assert [r.reason for r in db.session.scalars(select(CoaRequest))] == ["rejected"]


def test_accounting_start_interim_stop_lands_in_radacct_with_gigawords_folded(world):
    radius = world["radius"]
    radius.account("Start", "zoe", "S9", framed_ip="100.64.0.9")
    radius.account("Interim-Update", "zoe", "S9", framed_ip="100.64.0.9", input_octets=5 * 2**32 + 7,
                   output_octets=123, session_time=300)
    db.session.expire_all()
    row = db.session.scalar(select(RadAcct).where(RadAcct.acctsessionid == "S9"))
    assert row.acctstoptime is None and row.acctinputoctets == 5 * 2**32 + 7 and str(row.nasipaddress) == "127.0.0.1"
    radius.account("Stop", "zoe", "S9", framed_ip="100.64.0.9", input_octets=6 * 2**32, output_octets=456,
                   session_time=900)
    db.session.expire_all()
    row = db.session.scalar(select(RadAcct).where(RadAcct.acctsessionid == "S9"))
    assert row.acctstoptime is not None and row.acctsessiontime == 900 and row.acctoutputoctets == 456

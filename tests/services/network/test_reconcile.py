"""Billing ↔ network reconciliation: each kind of mismatch is found, near misses are not, clean data lists nothing,
each check is a fixed handful of statements, and every fix queues the right request with one audit event."""
from __future__ import annotations

from datetime import timedelta

import pytest
from flask_migrate import upgrade
from sqlalchemy import func, select

from isp_admin import create_app
from isp_admin.errors import BusinessRuleViolation, Invalid
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CoaRequest, Nas
from isp_admin.models.base import utcnow
from isp_admin.services.network import coa, credentials, reconcile
from isp_admin.unit_of_work import commit_step
from tests.conftest import ROOT, app_config
from tests.factories import PlanFactory
from tests.support.fake_nas import FakeNas
from tests.support.mismatches import attempt, change, found, online, plant_every_kind, subscription

NAS_SECRET = "nas-secret"


def audit_actions() -> list[str]:
    return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def requests() -> list[tuple]:
    return db.session.execute(select(CoaRequest.kind, CoaRequest.reason, CoaRequest.username, CoaRequest.status)
                              .order_by(CoaRequest.id)).all()


def test_every_kind_is_found_and_nothing_else(app):
    expected = plant_every_kind()
    report = reconcile.find_mismatches()
    assert found(report) == expected
    assert report.counts == {"stale_session": 5, "rejected_while_active": 2, "unknown_login": 2,
                             "address_conflict": 1}
    assert report.total == 10 and len(report.rows) == 10


def test_each_row_says_what_is_wrong_in_words_and_names_who(app):
    plant_every_kind()
    rows = {row.login: row for row in reconcile.find_mismatches().rows}
    assert "suspended by hand" in rows["manual"].detail and rows["manual"].customer_name == "Customer manual"
    assert rows["manual"].fixes == ("disconnect", "resend") and rows["manual"].session_id == "S-MANUAL"
    assert rows["manual"].nas == "127.0.0.1" and rows["manual"].radacct_id
    assert "has not started yet" in rows["pending"].detail
    assert "walled garden" in rows["walled"].detail and "non-payment" in rows["walled"].detail
    assert "old plan" in rows["moved"].detail
    assert "No PPPoE password" in rows["nopass"].detail and "No PPPoE password" not in rows["refused"].detail
    assert rows["refused"].fixes == ("acknowledge",) and rows["refused"].radacct_id is None
    assert "No subscription has the login ghost" in rows["ghost"].detail and rows["ghost"].subscription_id is None
    assert "cancelled" in rows["gone"].detail and rows["gone"].customer_name == "Customer gone"
    assert "100.64.0.7" in rows["intruder"].detail and rows["intruder"].customer_name == "Customer owner"


def test_clean_data_lists_nothing(app):
    t0 = utcnow() - timedelta(hours=2)
    steady = subscription("steady")
    online("steady", "s-1", t0)
    attempt("steady", "Access-Accept", t0)
    garden = subscription("garden")
    change(garden.id, t0, status="suspended", suspension_reason="non_payment")
    online("garden", "s-2", t0 + timedelta(minutes=5))
    subscription("away", status="suspended", suspension_reason="manual")
    subscription("owner", static_ip="100.64.0.7")
    online("owner", "s-3", t0, framed_ip="100.64.0.7")
    online("ended", "s-4", t0, stopped=t0 + timedelta(minutes=1))
    report = reconcile.find_mismatches()
    assert report.rows == [] and report.total == 0
    assert report.counts == dict.fromkeys(reconcile.KINDS, 0)
    assert steady.id  # the live login with an accepted session is not a mismatch


def test_a_change_still_on_its_way_is_not_a_mismatch_yet(app):
    sub = subscription("zoe")
    online("zoe", "s-zoe", utcnow() - timedelta(hours=1))
    change(sub.id, utcnow(), status="suspended", suspension_reason="manual")
    assert reconcile.find_mismatches().rows == []
    later = reconcile.find_mismatches(now=utcnow() + reconcile.SETTLE + timedelta(minutes=1))
    assert found(later) == {("stale_session", "zoe")}


def test_a_check_is_five_statements_however_much_it_finds(app, query_counter):
    with query_counter() as clean:
        reconcile.find_mismatches()
    plant_every_kind()
    with query_counter() as planted:
        reconcile.find_mismatches()
    assert len(clean) == len(planted) == 5


def test_the_limit_bounds_the_rows_not_the_counts(app):
    plant_every_kind()
    report = reconcile.find_mismatches(limit=2)
    assert len(report.of("stale_session")) == 2 and report.counts["stale_session"] == 5
    assert [row.login for row in report.of("stale_session")] == ["manual", "late"]  # oldest sessions first
    with pytest.raises(Invalid):
        reconcile.find_mismatches(limit=0)


def test_disconnect_queues_one_request_with_one_audit_event_and_refuses_a_second(app):
    plant_every_kind()
    ghost = next(row for row in reconcile.find_mismatches().rows if row.login == "ghost")
    before = audit_actions()
    reconcile.disconnect(ghost.radacct_id)
    db.session.commit()
    assert requests() == [("coa", "plan_change", "changed", "acked"),
                          ("disconnect", "reconcile", "ghost", "failed")]  # no NAS row for 127.0.0.1 here
    assert audit_actions()[len(before):] == ["session.disconnect"]


def test_a_queued_fix_is_shown_and_not_queued_twice(app):
    db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", secret=NAS_SECRET, coa_port=3799))
    db.session.commit()
    online("ghost", "s-ghost", utcnow() - timedelta(hours=1))
    [row] = reconcile.find_mismatches().rows
    assert not row.queued
    reconcile.disconnect(row.radacct_id)
    db.session.commit()
    [row] = reconcile.find_mismatches().rows
    assert row.queued
    with pytest.raises(BusinessRuleViolation):
        reconcile.disconnect(row.radacct_id)
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(CoaRequest)) == 1


def test_resend_sends_the_state_billing_says_with_one_audit_event(app):
    db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", secret=NAS_SECRET, coa_port=3799))
    db.session.commit()
    t0 = utcnow() - timedelta(hours=3)
    home, fast = PlanFactory(code="HOME50"), PlanFactory(code="FIBRE200", download_mbps=200, upload_mbps=40)
    moved = subscription("moved", home)
    online("moved", "s-moved", t0)
    change(moved.id, t0 + timedelta(hours=1), plan_id=fast.id)
    assert found(reconcile.find_mismatches()) == {("stale_session", "moved")}

    reconcile.resend(moved.id)
    db.session.commit()
    assert requests() == [("coa", "resend", "moved", "pending")]
    assert audit_actions() == ["subscription.coa_resend"]
    request = db.session.scalar(select(CoaRequest))
    assert '"40M/200M"' in request.attributes
    # Once the NAS acknowledges the CoA, the session runs on the new plan: no longer a mismatch.
    request.status = "acked"
    db.session.commit()
    assert reconcile.find_mismatches().rows == []


def test_acknowledging_a_refusal_hides_it_until_the_network_accepts_and_refuses_again(app):
    t0 = utcnow() - timedelta(hours=3)
    sub = subscription("zoe")
    attempt("zoe", "Access-Reject", t0)
    assert found(reconcile.find_mismatches()) == {("rejected_while_active", "zoe")}

    reconcile.acknowledge_rejection(sub.id)
    db.session.commit()
    assert audit_actions() == [reconcile.ACKNOWLEDGED]
    attempt("zoe", "Access-Reject", utcnow())  # the same router, still wrong: still acknowledged
    assert reconcile.find_mismatches().rows == []

    attempt("zoe", "Access-Accept", utcnow() + timedelta(seconds=1))
    assert reconcile.find_mismatches().rows == []
    attempt("zoe", "Access-Reject", utcnow() + timedelta(seconds=2))  # a new problem
    assert found(reconcile.find_mismatches()) == {("rejected_while_active", "zoe")}


def test_nothing_to_acknowledge_is_refused_without_an_audit_event(app):
    sub = subscription("zoe")
    attempt("zoe", "Access-Accept", utcnow())
    with pytest.raises(BusinessRuleViolation):
        reconcile.acknowledge_rejection(sub.id)
    db.session.rollback()
    assert audit_actions() == []


def test_the_disconnect_fix_reaches_the_router(app):
    nas = FakeNas(NAS_SECRET).start()
    try:
        db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", secret=NAS_SECRET, coa_port=nas.port))
        db.session.commit()
        online("ghost", "s-ghost", utcnow() - timedelta(hours=1), framed_ip="100.64.3.3")
        [row] = reconcile.find_mismatches().rows
        reconcile.disconnect(row.radacct_id)
        db.session.commit()
        assert coa.dispatch(commit_step)["acked"] == 1
        [received] = nas.wait_for(1)
        assert (received.kind, received.first("User-Name"), received.first("Acct-Session-Id"),
                received.first("Framed-IP-Address")) == ("disconnect", "ghost", "S-GHOST", "100.64.3.3")
        assert requests() == [("disconnect", "reconcile", "ghost", "acked")]
    finally:
        nas.stop()


def test_through_freeradius_a_refused_login_a_stranger_and_a_suspended_session(app, freeradius):
    radius = freeradius.client()
    zoe = subscription("zoe", start_date=utcnow().date() - timedelta(days=30))
    password = credentials.set_password(zoe.id)
    max_ = subscription("max")
    db.session.commit()
    change(max_.id, utcnow() - timedelta(hours=1), status="suspended", suspension_reason="manual")

    assert not radius.authenticate("zoe", password + "x").accepted  # a typo in the customer's router
    assert not radius.authenticate("max", "whatever").accepted
    radius.account("Start", "stranger", "X1", framed_ip="100.64.0.50")
    radius.account("Start", "max", "M1", framed_ip="100.64.0.51")  # online although rejected
    db.session.expire_all()
    report = reconcile.find_mismatches()
    assert found(report) == {("rejected_while_active", "zoe"), ("unknown_login", "stranger"),
                             ("stale_session", "max")}

    assert radius.authenticate("zoe", password).accepted  # the router is fixed
    radius.account("Stop", "stranger", "X1", framed_ip="100.64.0.50", session_time=60)
    assert found(reconcile.find_mismatches()) == {("stale_session", "max")}


@pytest.fixture
def sqlite_app(tmp_path):
    """The embedded default (`make run`): SQLite, migrated as a fresh install is."""
    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance"))
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        yield app
        db.session.remove()
        db.engine.dispose()


def test_the_same_checks_run_on_sqlite(sqlite_app):
    db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", secret=NAS_SECRET, coa_port=3799))
    expected = plant_every_kind()
    report = reconcile.find_mismatches()
    assert found(report) == expected
    ghost = next(row for row in report.rows if row.login == "ghost")
    reconcile.disconnect(ghost.radacct_id)
    db.session.commit()
    assert next(row for row in reconcile.find_mismatches().rows if row.login == "ghost").queued

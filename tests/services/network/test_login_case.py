"""A PPPoE login is the same login whatever its case, with the real FreeRADIUS: staff store "Zoe.OBrien", the
customer's router sends "ZOE.OBRIEN" or "zoe.obrien", and each is that subscription's login — for the answer, for
accounting, for the panel's sessions and reconciliation, and for the Disconnect a suspension sends (which names
the session as the router sent it). Before, only the exact case was accepted (docs/network.md, "Logins and case").
"""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import select, text

from isp_admin.extensions import db
from isp_admin.models import Nas, RadAcct, RadPostAuth
from isp_admin.services.customers import subscriptions
from isp_admin.services.network import coa, credentials, reconcile, sessions
from isp_admin.services.network.answer import radius_answer
from isp_admin.unit_of_work import commit_step
from tests.conftest import is_postgres
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.support.fake_nas import FakeNas

D = date
NAS_SECRET = "nas-secret"
STORED = "Zoe.OBrien"
TYPED = ("Zoe.OBrien", "zoe.obrien", "ZOE.OBRIEN", "zOE.oBRIEN")


@pytest.fixture
def world(app, freeradius, monkeypatch):
    """A customer on HOME50 whose login staff typed with capitals, a password and a fake NAS."""
    monkeypatch.setattr(subscriptions, "today", lambda: D(2026, 3, 20))
    plan = PlanFactory(code="HOME50", download_mbps=50, upload_mbps=10, monthly_price_cents=3000, tax_rate_bp=0)
    sub = SubscriptionFactory(customer=CustomerFactory(), plan=plan, pppoe_username=STORED, static_ip="100.64.0.9",
                              start_date=D(2026, 1, 1), billing_day=1, next_bill_date=D(2026, 4, 1))
    db.session.commit()
    password = credentials.set_password(sub.id)
    fake = FakeNas(NAS_SECRET).start()
    db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", type="mikrotik", secret=NAS_SECRET,
                       coa_port=fake.port))
    db.session.commit()
    yield {"sub": sub, "password": password, "radius": freeradius.client(), "nas": fake}
    fake.stop()


@pytest.mark.parametrize("method", ["pap", "chap"])
def test_the_login_is_accepted_in_any_case_with_its_plan_and_static_ip(world, method):
    for typed in TYPED:
        answer = world["radius"].authenticate(typed, world["password"], method)
        assert answer.accepted, typed
        assert answer.first("Mikrotik-Rate-Limit") == "10M/50M", typed
        assert answer.first("Framed-IP-Address") == "100.64.0.9", typed
    # The case is no password: a wrong one is still refused, and another login is still nobody's.
    assert not world["radius"].authenticate("ZOE.OBRIEN", world["password"].swapcase(), method).accepted
    assert not world["radius"].authenticate("zoe.obrie", world["password"], method).accepted
    # The panel's "what RADIUS answers now" reads the same views the same way.
    for typed in TYPED:
        assert radius_answer(typed, "active", None).verdict == "accept"


def test_a_suspension_in_any_case_is_applied_too(world):
    subscriptions.suspend(world["sub"].id, "manual")
    db.session.commit()
    answer = world["radius"].authenticate("zoe.obrien", world["password"])
    assert not answer.accepted and answer.first("Reply-Message") == "Service suspended: please contact us."


def test_a_session_in_another_case_is_the_subscriptions_and_its_disconnect_names_it_as_the_router_did(world):
    radius, sub = world["radius"], world["sub"]
    radius.account("Start", "ZOE.OBRIEN", "S1", framed_ip="100.64.0.9", input_octets=5, output_octets=7)
    db.session.expire_all()
    assert db.session.scalar(select(RadAcct.username)) == "ZOE.OBRIEN"  # kept as the router sent it

    assert [s.acct_session_id for s in sessions.open_sessions(sub.id)] == ["S1"]
    assert sessions.online_counts([sub.id]) == {sub.id: 1}
    [row] = sessions.online_now(size=10).rows
    assert row.subscription_id == sub.id
    assert sessions.usage_periods(sub.id)[0][0].sessions == 1
    assert reconcile.find_mismatches().total == 0  # not an "unknown login"

    subscriptions.suspend(sub.id, "manual")
    db.session.commit()
    assert coa.dispatch(commit_step)["acked"] == 1
    [request] = world["nas"].wait_for(1)
    assert (request.kind, request.first("User-Name"), request.first("Acct-Session-Id")) == \
        ("disconnect", "ZOE.OBRIEN", "S1")


def test_retyping_the_login_in_another_case_is_no_rename_and_disconnects_nobody(world):
    radius, sub = world["radius"], world["sub"]
    radius.account("Start", "zoe.obrien", "S1", framed_ip="100.64.0.9")
    subscriptions.update_network(sub.id, "ZOE.OBRIEN", "100.64.0.9", None)
    db.session.commit()
    assert coa.dispatch(commit_step)["acked"] == 0
    assert world["nas"].received == []
    assert radius.authenticate("Zoe.OBrien", world["password"]).accepted


def test_a_refusal_in_another_case_is_found_by_reconciliation(world):
    world["radius"].authenticate("ZOE.OBRIEN", "not-the-password")
    db.session.expire_all()
    assert db.session.scalar(select(RadPostAuth.username)) == "ZOE.OBRIEN"
    report = reconcile.find_mismatches()
    assert [(row.kind, row.subscription_id) for row in report.rows] == [("rejected_while_active", world["sub"].id)]


def _plan(sql: str) -> str:
    db.session.execute(text("SET LOCAL enable_seqscan = off"))  # a handful of rows: ask whether the index serves
    return "\n".join(row[0] for row in db.session.execute(text(f"EXPLAIN {sql}")))


def test_every_lookup_in_any_case_is_served_by_its_lower_case_index(world):
    if not is_postgres():
        pytest.skip("query plans are PostgreSQL's")
    for query in ("SELECT id FROM radcheck WHERE LOWER(UserName) = LOWER('ZOE.OBRIEN')",
                  "SELECT GroupName FROM radusergroup WHERE LOWER(UserName) = LOWER('ZOE.OBRIEN')",
                  "SELECT id FROM radreply WHERE LOWER(UserName) = LOWER('ZOE.OBRIEN')"):
        assert "uq_subscriptions_pppoe_live" in _plan(query), query
    # radacct and radpostauth: the panel's lookups of a login's sessions and attempts (either lower() index).
    for query in ("SELECT radacctid FROM radacct WHERE lower(username) = 'zoe.obrien' AND acctstoptime IS NULL",
                  "SELECT radacctid FROM radacct WHERE lower(username) = 'zoe.obrien' AND acctstarttime >= now()",
                  "SELECT id FROM radpostauth WHERE lower(username) = 'zoe.obrien' ORDER BY authdate DESC LIMIT 1"):
        plan = _plan(query)
        assert "Seq Scan" not in plan and "(lower(username) = 'zoe.obrien'::text)" in plan, plan
    db.session.rollback()

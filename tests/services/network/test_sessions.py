"""Sessions and usage: what the routers report through the real FreeRADIUS becomes a subscription's sessions, its
usage per billing period against its cap, and the online state of many subscriptions at once; the network view
says exactly what FreeRADIUS answers."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select

from isp_admin.errors import Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import RadAcct, Subscription
from isp_admin.services.customers import subscriptions
from isp_admin.services.network import credentials, sessions
from isp_admin.services.network.answer import radius_answer
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

GB = 10**9
_counter = iter(range(1, 10**6))


def at(year, month, day, hour=12) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def accounting(username: str, started: datetime, *, sent: int = 0, received: int = 0, stopped: datetime | None = None,
               nas: str = "192.0.2.1", ip: str | None = None) -> RadAcct:
    """An accounting row as FreeRADIUS writes it (for the tests that need sessions in the past)."""
    n = next(_counter)
    row = RadAcct(acctsessionid=f"S{n}", acctuniqueid=f"u{n}", username=username, nasipaddress=nas,
                  framedipaddress=ip, acctstarttime=started, acctupdatetime=stopped or started, acctstoptime=stopped,
                  acctsessiontime=int((stopped - started).total_seconds()) if stopped else 0,
                  acctinputoctets=sent, acctoutputoctets=received)
    db.session.add(row)
    return row


@pytest.fixture
def frozen_today(monkeypatch):
    """Usage periods are counted up to 'today': 2026-03-20."""
    monkeypatch.setattr(sessions, "today", lambda: date(2026, 3, 20))
    monkeypatch.setattr(subscriptions, "today", lambda: date(2026, 3, 20))


# --- through the real FreeRADIUS --------------------------------------------------------------------------------

@pytest.fixture
def zoe(app, freeradius):
    """Zoe on HOME50 (10 GB cap) with a password, and a NAS client speaking to the real FreeRADIUS."""
    plan = PlanFactory(code="HOME50", download_mbps=50, upload_mbps=10, data_cap_gb=10)
    sub = SubscriptionFactory(plan=plan, pppoe_username="zoe", static_ip="100.64.0.9", start_date=date(2026, 1, 1),
                              billing_day=1)
    db.session.commit()
    password = credentials.set_password(sub.id)
    db.session.commit()
    return {"sub": sub, "plan": plan, "password": password, "radius": freeradius.client()}


def test_accounting_through_freeradius_is_a_session_and_usage(zoe):
    radius, sub_id = zoe["radius"], zoe["sub"].id
    radius.account("Start", "zoe", "A1", framed_ip="100.64.0.9")
    radius.account("Interim-Update", "zoe", "A1", framed_ip="100.64.0.9", input_octets=300_000_000,
                   output_octets=5 * 2**32 + 7, session_time=600)
    db.session.expire_all()

    [session] = sessions.open_sessions(sub_id)
    assert (session.acct_session_id, session.nas_address, session.framed_ip) == ("A1", "127.0.0.1", "100.64.0.9")
    assert (session.input_octets, session.output_octets, session.open) == (300_000_000, 5 * 2**32 + 7, True)
    assert session.duration_seconds >= 600
    assert sessions.online_counts([sub_id]) == {sub_id: 1}
    [current, *_] = sessions.usage_periods(sub_id)[0]
    assert current.total_octets == 300_000_000 + 5 * 2**32 + 7 and current.sessions == 1
    assert current.cap_gb == 10 and current.percent_of_cap == round((300_000_000 + 5 * 2**32 + 7) / (10 * GB) * 100, 1)

    radius.account("Stop", "zoe", "A1", framed_ip="100.64.0.9", input_octets=400_000_000, output_octets=2 * GB,
                   session_time=900)
    db.session.expire_all()
    assert sessions.open_sessions(sub_id) == [] and sessions.online_counts([sub_id]) == {}
    [ended] = sessions.recent_sessions(sub_id)
    assert (ended.open, ended.duration_seconds, ended.total_octets) == (False, 900, 2_400_000_000)
    assert sessions.usage_periods(sub_id)[0][0].percent_of_cap == 24.0


@pytest.mark.parametrize("state", ["active", "no_password", "manual", "non_payment", "pending", "cancelled"])
def test_the_network_view_says_what_freeradius_answers(zoe, state):
    sub, radius = zoe["sub"], zoe["radius"]
    if state == "no_password":
        sub = SubscriptionFactory(plan=zoe["plan"], pppoe_username="nopass", start_date=date(2026, 1, 1))
    elif state in ("manual", "non_payment"):
        db.session.execute(Subscription.__table__.update().where(Subscription.id == sub.id)
                           .values(status="suspended", suspension_reason=state))
    elif state in ("pending", "cancelled"):
        db.session.execute(Subscription.__table__.update().where(Subscription.id == sub.id).values(
            status=state, end_date=date(2026, 3, 1) if state == "cancelled" else None))
    db.session.commit()
    db.session.expire_all()
    sub = db.session.get(Subscription, sub.id)

    answer = radius_answer(sub.pppoe_username, sub.status, sub.suspension_reason)
    truth = radius.authenticate(sub.pppoe_username, zoe["password"])

    assert (answer.verdict != "reject") == truth.accepted, (answer, truth)
    expected = {
        "active": "Accept: plan-HOME50, Mikrotik-Rate-Limit 10M/50M, Framed-IP-Address 100.64.0.9",
        "no_password": "Reject (no password set)",
        "manual": "Reject (suspended: manual)",
        "non_payment": "Walled garden: Framed-Pool walled-garden, Mikrotik-Rate-Limit 256k/256k, "
                       "Mikrotik-Address-List suspended",
        "pending": "Reject (not started yet)",
        "cancelled": "Reject (cancelled)",
    }[state]
    assert answer.summary == expected
    if truth.accepted:  # every attribute the view lists is one FreeRADIUS sends, with that value
        assert {a: v for a, _op, v in answer.attributes} == {a: truth.first(a) for a, _op, _v in answer.attributes}
    assert zoe["password"] not in repr(answer)


# --- windows, periods, caps -------------------------------------------------------------------------------------

def test_a_reused_login_keeps_each_subscriptions_sessions_and_usage_apart(app, frozen_today):
    plan = PlanFactory()
    old = SubscriptionFactory(plan=plan, pppoe_username="reused", status="cancelled", start_date=date(2025, 6, 1),
                              end_date=date(2026, 2, 10), billing_day=1)
    new = SubscriptionFactory(plan=plan, pppoe_username="reused", start_date=date(2026, 2, 15), billing_day=1)
    accounting("reused", at(2026, 2, 3), sent=1, received=100, stopped=at(2026, 2, 3, 13))
    accounting("reused", at(2026, 2, 16), sent=2, received=200, stopped=at(2026, 2, 16, 13))
    accounting("reused", at(2026, 3, 2), sent=3, received=300)  # open
    db.session.commit()

    assert [s.output_octets for s in sessions.recent_sessions(old.id)] == [100]
    assert [s.output_octets for s in sessions.recent_sessions(new.id)] == [300, 200]
    assert sessions.online_counts([old.id, new.id]) == {new.id: 1}
    assert [s.output_octets for s in sessions.open_sessions(new.id)] == [300]
    old_usage, old_total = sessions.usage_periods(old.id, count=2)
    assert old_total == 9 and [(u.period_start, u.total_octets) for u in old_usage] == [
        (date(2026, 2, 1), 101), (date(2026, 1, 1), 0)]
    new_usage, new_total = sessions.usage_periods(new.id)
    assert new_total == 2
    assert [(u.period_start, u.period_end, u.total_octets) for u in new_usage] == [
        (date(2026, 3, 1), date(2026, 4, 1), 303), (date(2026, 2, 15), date(2026, 3, 1), 202)]


def test_usage_is_counted_in_the_period_a_session_started_in_on_the_billing_day(app, frozen_today):
    plan = PlanFactory(data_cap_gb=2)
    sub = SubscriptionFactory(plan=plan, pppoe_username="cycler", start_date=date(2025, 12, 20), billing_day=31)
    # Billing day 31: the periods run Dec 31 → Jan 31 → Feb 28 → Mar 31 (short months bill on their last day).
    accounting("cycler", at(2026, 2, 27, 23), sent=GB, received=GB, stopped=at(2026, 3, 1))  # crosses the bill date
    accounting("cycler", at(2026, 2, 28, 1), received=3 * GB // 2, stopped=at(2026, 2, 28, 2))
    accounting("cycler", at(2026, 1, 5), received=7)
    accounting("cycler", at(2025, 12, 19), received=999)  # before the subscription started: not its own
    accounting("someone-else", at(2026, 3, 1), received=10**12)
    db.session.commit()

    usage, total = sessions.usage_periods(sub.id)
    assert total == 4
    assert [(u.period_start, u.period_end, u.total_octets, u.sessions) for u in usage] == [
        (date(2026, 2, 28), date(2026, 3, 31), 3 * GB // 2, 1),
        (date(2026, 1, 31), date(2026, 2, 28), 2 * GB, 1),
        (date(2025, 12, 31), date(2026, 1, 31), 7, 1),
        (date(2025, 12, 20), date(2025, 12, 31), 0, 0),
    ]
    assert (usage[0].percent_of_cap, usage[0].over_cap) == (75.0, False)
    assert (usage[1].cap_octets, usage[1].percent_of_cap, usage[1].over_cap) == (2 * GB, 100.0, False)
    page_two, _ = sessions.usage_periods(sub.id, count=3, skip=3)
    assert [u.period_start for u in page_two] == [date(2025, 12, 20)]
    assert sessions.usage_periods(sub.id, count=3, skip=30) == ([], 4)


def test_over_the_cap_and_no_cap(app, frozen_today):
    capped = SubscriptionFactory(plan=PlanFactory(data_cap_gb=1), pppoe_username="heavy", billing_day=1)
    uncapped = SubscriptionFactory(plan=PlanFactory(data_cap_gb=None), pppoe_username="free", billing_day=1)
    accounting("heavy", at(2026, 3, 2), sent=GB // 2, received=GB)
    accounting("free", at(2026, 3, 2), received=5 * GB)
    db.session.commit()
    heavy = sessions.usage_periods(capped.id, count=1)[0][0]
    assert (heavy.total_octets, heavy.percent_of_cap, heavy.over_cap) == (3 * GB // 2, 150.0, True)
    free = sessions.usage_periods(uncapped.id, count=1)[0][0]
    assert (free.total_octets, free.cap_octets, free.percent_of_cap, free.over_cap) == (5 * GB, None, None, False)


def test_a_subscription_that_has_not_started_has_no_usage_yet(app, frozen_today):
    sub = SubscriptionFactory(status="pending", pppoe_username="later", start_date=date(2026, 4, 2))
    assert sessions.usage_periods(sub.id) == ([], 0)
    assert sessions.network_panel(sub.id).current_usage is None


def test_online_state_of_many_subscriptions_is_one_query(app, query_counter):
    subs = [SubscriptionFactory(pppoe_username=f"many{i}", start_date=date(2026, 1, 1)) for i in range(12)]
    no_login = SubscriptionFactory(pppoe_username=None)
    now = datetime.now(UTC)
    for i, sub in enumerate(subs):
        if i % 3 == 0:
            accounting(sub.pppoe_username, now - timedelta(hours=1))
            accounting(sub.pppoe_username, now - timedelta(minutes=5))
        elif i % 3 == 1:
            accounting(sub.pppoe_username, now - timedelta(hours=2), stopped=now - timedelta(hours=1))
    db.session.commit()
    ids = [s.id for s in subs] + [no_login.id]
    with query_counter() as statements:
        counts = sessions.online_counts(ids)
    assert len(statements) == 1
    assert counts == {subs[i].id: 2 for i in range(0, 12, 3)}
    assert sessions.online_counts([]) == {}


def test_the_panel_runs_the_same_statements_for_one_or_many_sessions(app, query_counter):
    plan = PlanFactory(data_cap_gb=50)
    few = SubscriptionFactory(plan=plan, pppoe_username="few", start_date=date(2026, 1, 1))
    lots = SubscriptionFactory(plan=plan, pppoe_username="lots", start_date=date(2026, 1, 1))
    now = datetime.now(UTC)
    accounting("few", now - timedelta(hours=1))
    for i in range(60):
        stopped = None if i < 25 else now - timedelta(hours=i)
        accounting("lots", now - timedelta(hours=i + 1), received=i, stopped=stopped)
    db.session.commit()
    counts = {}
    for sub in (few, lots):
        db.session.expire_all()
        db.session.get(Subscription, sub.id)  # the page has loaded it already
        with query_counter() as statements:
            panel = sessions.network_panel(sub.id)
        counts[sub.pppoe_username] = len(statements)
    assert counts["few"] == counts["lots"] <= 7, counts
    assert len(panel.open_sessions) == sessions.RECENT and len(panel.recent_sessions) == sessions.RECENT
    assert panel.online and panel.recent_sessions[0].output_octets == 0


# --- the online list ---------------------------------------------------------------------------------------------

def test_online_now_searches_by_login_or_ip_and_flags_unknown_logins(app):
    customer = CustomerFactory(name="Amina Otieno")
    sub = SubscriptionFactory(customer=customer, pppoe_username="amina.o")
    SubscriptionFactory(pppoe_username="ghost", status="cancelled", end_date=date(2026, 2, 1))
    now = datetime.now(UTC)
    accounting("amina.o", now, ip="100.64.1.10")
    accounting("ghost", now, ip="100.64.2.20")
    accounting("amina.o", now - timedelta(days=1), stopped=now - timedelta(hours=3), ip="100.64.1.11")
    db.session.commit()

    page = sessions.online_now(size=50)
    assert [(s.username, s.subscription_id, s.customer_name) for s in page.rows] == [
        ("ghost", None, None), ("amina.o", sub.id, "Amina Otieno")]
    assert page.total == 2
    assert [s.username for s in sessions.online_now("AMINA", size=50).rows] == ["amina.o"]
    assert [s.username for s in sessions.online_now("100.64.2.20", size=50).rows] == ["ghost"]
    assert [s.username for s in sessions.online_now("100.64.", size=50).rows] == ["ghost", "amina.o"]
    assert sessions.online_now("100.64.1.11", size=50).rows == []  # ended
    assert sessions.online_now("a%_", size=50).rows == []  # wildcards are literal


def test_online_now_pages_by_cursor_over_every_session_once(app):
    now = datetime.now(UTC)
    for i in range(23):
        accounting(f"walker{i}", now - timedelta(minutes=i))
    db.session.commit()
    seen, after = [], None
    while True:
        page = sessions.online_now(size=5, after=after)
        seen += [s.username for s in page.rows]
        if not page.next_cursor:
            break
        after = page.next_cursor
    assert sorted(seen) == sorted(f"walker{i}" for i in range(23)) and len(seen) == 23
    back = sessions.online_now(size=5, before=page.prev_cursor)
    assert len(back.rows) == 5 and back.rows[-1].username == seen[-4]


@pytest.mark.parametrize("kwargs", [{"q": "a\x00b"}, {"q": "x" * 101}, {"after": "A" * 5000}, {"after": "bm90IGpzb24"},
                                    {"before": "WzEsIDFd" * 3}])
def test_hostile_search_and_cursors_are_refused_as_invalid(app, kwargs):
    with pytest.raises(Invalid):
        sessions.online_now(size=10, **kwargs)


def test_unknown_ids_are_not_found(app):
    for call in (lambda: sessions.network_panel(999_999), lambda: sessions.usage_periods(999_999),
                 lambda: sessions.recent_sessions(999_999), lambda: sessions.get_session(999_999)):
        with pytest.raises(NotFound):
            call()
    assert db.session.scalar(select(RadAcct.radacctid)) is None

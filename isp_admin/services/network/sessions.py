"""Sessions and usage from accounting (radacct), and what RADIUS would answer a subscription's login now.

A subscription's sessions are its PPPoE login's sessions (in whatever case the router sent the login) that started
inside its service window: from its start date to the end of its end date (the ISP's days). A cancelled
subscription's login may be reused by a new live one; the window keeps each subscription's sessions and usage its
own. A session renamed away (a new login) stays with the old name. Usage counts a session wholly in the billing
period in which it STARTED: accounting reports a session's running totals, not its octets per day, so no split
across a bill date would be exact. Octets are RFC 2866's, seen from the NAS: input is what the customer sent
(upload), output what they received (download); a cap counts both. Every function runs a fixed number of
statements, however many sessions or subscriptions there are.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import String, and_, case, cast, func, or_, select

from isp_admin.database import escape_like
from isp_admin.errors import Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import Customer, NetworkCredential, Plan, RadAcct, Subscription
from isp_admin.models.base import utcnow
from isp_admin.services.billing.calendar import add_months, bill_date, period_containing
from isp_admin.services.network import queries
from isp_admin.services.network.answer import RadiusAnswer, radius_answer
from isp_admin.services.network.logins import login_column, login_key, same_login
from isp_admin.services.platform.clock import today
from isp_admin.services.platform.pagination import Page, keyset_by_id

RECENT = 20  # sessions a subscription's page lists
USAGE_PERIODS = 6  # billing periods its usage table shows
GB = 10**9  # caps are quoted in decimal gigabytes, as ISPs sell them
MAX_SEARCH = 100


@dataclass(frozen=True)
class Session:
    """One accounting session, with its duration so far; the subscription fields are the online list's."""

    id: int
    acct_session_id: str
    username: str | None
    nas_address: str
    framed_ip: str | None
    calling_station_id: str | None
    started_at: datetime | None
    updated_at: datetime | None
    stopped_at: datetime | None
    input_octets: int
    output_octets: int
    terminate_cause: str | None
    duration_seconds: int
    subscription_id: int | None = None
    customer_id: int | None = None
    customer_name: str | None = None

    @property
    def open(self) -> bool:
        """Whether the NAS has not reported its stop yet."""
        return self.stopped_at is None

    @property
    def total_octets(self) -> int:
        """Both directions."""
        return self.input_octets + self.output_octets


@dataclass(frozen=True)
class Usage:
    """The octets of the sessions that started in one billing period [period_start, period_end), and the cap."""

    period_start: date
    period_end: date
    input_octets: int
    output_octets: int
    sessions: int
    cap_gb: int | None

    @property
    def total_octets(self) -> int:
        """Both directions: what a cap counts."""
        return self.input_octets + self.output_octets

    @property
    def cap_octets(self) -> int | None:
        """The cap in octets, or None without one."""
        return self.cap_gb * GB if self.cap_gb else None

    @property
    def percent_of_cap(self) -> float | None:
        """The share of the cap used, to one decimal (more than 100 when over it)."""
        if not self.cap_octets:
            return None
        return (2 * self.total_octets * 1000 + self.cap_octets) // (2 * self.cap_octets) / 10

    @property
    def over_cap(self) -> bool:
        """Whether the period used more than its cap."""
        return bool(self.cap_octets) and self.total_octets > self.cap_octets


@dataclass
class NetworkPanel:
    """Everything the subscription page's network card shows."""

    open_sessions: list[Session]
    recent_sessions: list[Session]
    usage: list[Usage]
    answer: RadiusAnswer
    password_set_at: datetime | None
    password_rotated_at: datetime | None
    coa_requests: list = field(default_factory=list)

    @property
    def online(self) -> bool:
        """Whether a session of this subscription is open."""
        return bool(self.open_sessions)

    @property
    def current_usage(self) -> Usage | None:
        """The current billing period's usage (None before the subscription starts)."""
        return self.usage[0] if self.usage else None


_COLUMNS = (RadAcct.radacctid, RadAcct.radacctid.label("id"), RadAcct.acctsessionid, RadAcct.username,
            RadAcct.nasipaddress, RadAcct.framedipaddress, RadAcct.callingstationid, RadAcct.acctstarttime,
            RadAcct.acctupdatetime, RadAcct.acctstoptime, RadAcct.acctsessiontime, RadAcct.acctinputoctets,
            RadAcct.acctoutputoctets, RadAcct.acctterminatecause)


def _session(row, now: datetime) -> Session:
    values = row._mapping if hasattr(row, "_mapping") else row
    start, stop, counted = values["acctstarttime"], values["acctstoptime"], values["acctsessiontime"] or 0
    if stop is None and start is not None:
        duration = max(int((now - start).total_seconds()), counted)  # interim updates lag the clock
    elif stop is not None and start is not None and not counted:
        duration = int((stop - start).total_seconds())
    else:
        duration = counted
    return Session(
        id=values["id"], acct_session_id=values["acctsessionid"], username=values["username"],
        nas_address=str(values["nasipaddress"]),
        framed_ip=str(values["framedipaddress"]) if values["framedipaddress"] else None,
        calling_station_id=values["callingstationid"], started_at=start, updated_at=values["acctupdatetime"],
        stopped_at=stop, input_octets=values["acctinputoctets"] or 0, output_octets=values["acctoutputoctets"] or 0,
        terminate_cause=values["acctterminatecause"], duration_seconds=max(duration, 0),
        subscription_id=values.get("subscription_id"), customer_id=values.get("customer_id"),
        customer_name=values.get("customer_name"))


def _instant(day: date) -> datetime:
    """The UTC instant the ISP's day begins."""
    return datetime.combine(day, time.min, ZoneInfo(current_app.config["TIMEZONE"])).astimezone(UTC)


def _window(start_date: date, end_date: date | None) -> tuple[datetime, datetime | None]:
    until = _instant(end_date + timedelta(days=1)) if end_date and end_date < date.max else None
    return _instant(start_date), until


def _subscription(subscription_id: int) -> Subscription:
    sub = db.session.get(Subscription, subscription_id)
    if sub is None:
        raise NotFound("No such subscription.")
    return sub


def _in_window(sub: Subscription):
    since, until = _window(sub.start_date, sub.end_date)
    condition = and_(login_column(RadAcct.username) == login_key(sub.pppoe_username), RadAcct.acctstarttime >= since)
    return and_(condition, RadAcct.acctstarttime < until) if until else condition


def _sessions(sub: Subscription, *conditions, limit: int) -> list[Session]:
    if not sub.pppoe_username:
        return []
    stmt = (select(*_COLUMNS).where(_in_window(sub), *conditions)
            .order_by(RadAcct.acctstarttime.desc(), RadAcct.radacctid.desc()).limit(limit))
    now = utcnow()
    return [_session(row, now) for row in db.session.execute(stmt)]


def get_session(radacct_id: int) -> Session:
    """Return one accounting session by id or raise NotFound."""
    row = db.session.execute(select(*_COLUMNS).where(RadAcct.radacctid == radacct_id)).first()
    if row is None:
        raise NotFound("No such session.")
    return _session(row, utcnow())


def open_sessions(subscription_id: int, limit: int = RECENT) -> list[Session]:
    """The subscription's sessions with no stop yet, newest first (at most `limit`)."""
    return _sessions(_subscription(subscription_id), RadAcct.acctstoptime.is_(None), limit=limit)


def recent_sessions(subscription_id: int, limit: int = RECENT) -> list[Session]:
    """The subscription's latest sessions, open or ended, newest first (at most `limit`)."""
    return _sessions(_subscription(subscription_id), limit=limit)


def session_page(subscription_id: int, *, size: int, after: str | None = None, before: str | None = None,
                 offset: int = 0) -> Page:
    """One page of the subscription's sessions, newest first, by number or cursor (rows are Sessions)."""
    sub = _subscription(subscription_id)
    stmt = select(*_COLUMNS).where(_in_window(sub) if sub.pppoe_username else RadAcct.radacctid.is_(None))
    page = keyset_by_id(stmt, RadAcct.radacctid, size, after, before, offset=offset)
    now = utcnow()
    page.rows = [_session(row, now) for row in page.rows]
    return page


def online_counts(subscription_ids: list[int]) -> dict[int, int]:
    """How many sessions each of these subscriptions has open (one query; absent ids have none)."""
    if not subscription_ids:
        return {}
    rows = db.session.execute(
        select(Subscription.id, Subscription.start_date, Subscription.end_date, RadAcct.acctstarttime)
        .join(RadAcct, and_(same_login(RadAcct.username, Subscription.pppoe_username), RadAcct.acctstoptime.is_(None)))
        .where(Subscription.id.in_(subscription_ids)))
    counts: dict[int, int] = {}
    for sub_id, start_date, end_date, started in rows:
        since, until = _window(start_date, end_date)
        if started is not None and started >= since and (until is None or started < until):
            counts[sub_id] = counts.get(sub_id, 0) + 1
    return counts


def _periods(sub: Subscription, skip: int, count: int) -> tuple[list[tuple[date, date]], int]:
    """The billing periods from the current one back to the first, newest first: `count` after `skip`, and all."""
    reference = min(today(), sub.end_date) if sub.end_date else today()
    if sub.start_date > reference:
        return [], 0
    first, _ = period_containing(sub.start_date, sub.billing_day)
    current, _ = period_containing(reference, sub.billing_day)
    total = (current.year * 12 + current.month) - (first.year * 12 + first.month) + 1
    periods = []
    for back in range(skip, min(skip + count, total)):
        year, month = add_months(current.year, current.month, -back)
        start = bill_date(year, month, sub.billing_day)
        periods.append((max(start, sub.start_date), bill_date(*add_months(year, month, 1), sub.billing_day)))
    return periods, total


def usage_periods(subscription_id: int, *, count: int = USAGE_PERIODS, skip: int = 0) -> tuple[list[Usage], int]:
    """Usage per billing period, newest first: `count` periods after skipping `skip`, and how many there are."""
    sub = _subscription(subscription_id)
    periods, total = _periods(sub, skip, count)
    if not periods:
        return [], total
    cap = db.session.get(Plan, sub.plan_id).data_cap_gb
    sums = _sums(sub, periods) if sub.pppoe_username else {}
    return [Usage(start, end, *sums.get(index, (0, 0, 0)), cap_gb=cap)
            for index, (start, end) in enumerate(periods)], total


def _sums(sub: Subscription, periods: list[tuple[date, date]]) -> dict[int, tuple[int, int, int]]:
    # Newest first and contiguous: the first period whose start a session's start reaches is its period.
    starts = [_instant(start) for start, _ in periods]
    index = case(*[(RadAcct.acctstarttime >= start, number) for number, start in enumerate(starts)])
    inner = (select(index.label("period"), func.coalesce(RadAcct.acctinputoctets, 0).label("input"),
                    func.coalesce(RadAcct.acctoutputoctets, 0).label("output"))
             .where(_in_window(sub), RadAcct.acctstarttime >= starts[-1],
                    RadAcct.acctstarttime < _instant(periods[0][1])).subquery())
    rows = db.session.execute(select(inner.c.period, func.sum(inner.c.input), func.sum(inner.c.output),
                                     func.count()).group_by(inner.c.period))
    return {period: (int(sent or 0), int(received or 0), count) for period, sent, received, count in rows}


def network_panel(subscription_id: int) -> NetworkPanel:
    """The network card: open and recent sessions, usage against the cap, RADIUS's answer, password, CoA."""
    sub = _subscription(subscription_id)
    credential = db.session.execute(select(NetworkCredential.created_at, NetworkCredential.rotated_at)
                                    .where(NetworkCredential.subscription_id == sub.id)).first()
    return NetworkPanel(
        open_sessions=_sessions(sub, RadAcct.acctstoptime.is_(None), limit=RECENT),
        recent_sessions=_sessions(sub, limit=RECENT),
        usage=usage_periods(sub.id)[0],
        answer=radius_answer(sub.pppoe_username, sub.status, sub.suspension_reason),
        password_set_at=credential.created_at if credential else None,
        password_rotated_at=credential.rotated_at if credential and credential.rotated_at != credential.created_at
        else None,
        coa_requests=queries.coa_requests(subscription_id=sub.id, limit=10),
    )


def online_now(q: str = "", *, size: int, after: str | None = None, before: str | None = None) -> Page:
    """Open sessions, newest first, by login or IP, each with the live subscription its login belongs to."""
    q = (q or "").strip()
    if "\x00" in q or len(q) > MAX_SEARCH:
        raise Invalid("The search is not valid.", {"q": f"At most {MAX_SEARCH} characters, no NUL."})
    stmt = (select(*_COLUMNS, Subscription.id.label("subscription_id"), Subscription.customer_id,
                   Customer.name.label("customer_name"))
            .select_from(RadAcct)
            # At most one live subscription holds a login (a partial unique index), so no session is listed twice.
            .outerjoin(Subscription, and_(same_login(Subscription.pppoe_username, RadAcct.username),
                                          Subscription.status != "cancelled"))
            .outerjoin(Customer, Customer.id == Subscription.customer_id)
            .where(RadAcct.acctstoptime.is_(None)))
    if q:
        stmt = stmt.where(_search(q))
    page = keyset_by_id(stmt, RadAcct.radacctid, size, after, before)
    now = utcnow()
    page.rows = [_session(row, now) for row in page.rows]
    return page


def _search(q: str):
    try:
        return RadAcct.framedipaddress == str(ipaddress.ip_address(q))  # a whole address: the partial index
    except ValueError:
        pattern = escape_like(q.lower())
        return or_(func.lower(RadAcct.username).like(f"%{pattern}%", escape="\\"),
                   cast(RadAcct.framedipaddress, String).like(f"{pattern}%", escape="\\"))


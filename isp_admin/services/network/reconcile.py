"""Billing ↔ network reconciliation (DESIGN §9): every session or login whose network state disagrees with billing.

Four checks, each ONE set-based statement that returns at most `limit` rows and the full count beside them:
- stale session: a live subscription's open session that runs under an older state — any session of a rejected
  profile (pending, or suspended with a reject policy), or one that started before the subscription's last
  network-relevant change and was not changed in place by an acknowledged CoA since;
- rejected while active: an active subscription whose last login attempt since its last change was refused;
- unknown login: an open session whose login no live subscription has (or only a cancelled one);
- address conflict: an open session holding a live subscription's static IP under another login.
A change younger than SETTLE is still on its way to the router (the CoA sweep runs every minute), so it is not
a mismatch yet. Every fix is a Disconnect/CoA request or an acknowledgement, each with one audit event.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, case, exists, func, or_, select
from sqlalchemy.orm import aliased

from isp_admin.errors import BusinessRuleViolation, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import (
    AuditEvent,
    CoaRequest,
    Customer,
    JobRun,
    NetworkChange,
    NetworkCredential,
    RadAcct,
    RadPostAuth,
    Subscription,
    SuspensionPolicy,
)
from isp_admin.models.base import utcnow
from isp_admin.services.network import coa
from isp_admin.services.network.logins import login_column, same_login
from isp_admin.services.platform import audit, job_runs
from isp_admin.services.platform.bulk import is_postgres
from isp_admin.services.platform.clock import today

KINDS = ("stale_session", "rejected_while_active", "unknown_login", "address_conflict")
LABELS = {"stale_session": "Online under an old state", "rejected_while_active": "Active but refused by the network",
          "unknown_login": "Online with an unknown login", "address_conflict": "Online on someone's static IP"}
FIXES = {"stale_session": ("disconnect", "resend"), "rejected_while_active": ("acknowledge",),
         "unknown_login": ("disconnect",), "address_conflict": ("disconnect",)}
SETTLE = timedelta(minutes=5)
MAX_LIMIT = 10_000
RUN_KIND = "network_reconcile"
FIX_REASON = "reconcile"
ACKNOWLEDGED = "network.rejection_acknowledged"
_REASONS = {"non_payment": "for non-payment", "manual": "by hand", "vacation": "for a vacation"}


@dataclass(frozen=True)
class Mismatch:
    """One disagreement, in words, with what it concerns and whether a fix is already on its way."""

    kind: str
    detail: str
    login: str | None
    subscription_id: int | None = None
    customer_id: int | None = None
    customer_name: str | None = None
    radacct_id: int | None = None
    session_id: str | None = None
    nas: str | None = None
    since: datetime | None = None
    queued: bool = False  # a Disconnect/CoA for this session is pending

    @property
    def fixes(self) -> tuple[str, ...]:
        """The fixes that apply: disconnect, resend, acknowledge."""
        return FIXES[self.kind]


@dataclass
class Report:
    """What a check found: the rows (at most `limit` per kind), the full count per kind, and the CoA outbox."""

    rows: list[Mismatch]
    counts: dict[str, int]
    coa: dict[str, int] = field(default_factory=dict)
    checked_at: datetime = field(default_factory=utcnow)

    @property
    def total(self) -> int:
        """How many mismatches in all (rows beyond the limit included)."""
        return sum(self.counts.values())

    def of(self, kind: str) -> list[Mismatch]:
        """The listed rows of one kind."""
        return [row for row in self.rows if row.kind == kind]


def _profile(status, action):
    # The radusergroup view's CASE: what the network gives a subscription in this state.
    return case((status == "active", "service"),
                (and_(status == "suspended", action == "walled_garden"), "walled_garden"), else_="reject")


def _last_change(subscription_id, relevant_only: bool):
    """When the subscription last changed (relevant_only: in a way the dispatcher sends a packet for)."""
    change, old, new = aliased(NetworkChange), aliased(SuspensionPolicy), aliased(SuspensionPolicy)
    stmt = select(func.max(change.created_at)).where(change.subscription_id == subscription_id)
    if relevant_only:
        before, after = _profile(change.old_status, old.action), _profile(change.new_status, new.action)
        stmt = (stmt.select_from(change).outerjoin(old, old.reason == change.old_reason)
                .outerjoin(new, new.reason == change.new_reason)
                .where(or_(change.old_username.is_distinct_from(change.new_username), before != after,
                           and_(after == "service", or_(change.old_plan_id.is_distinct_from(change.new_plan_id),
                                                        change.old_static_ip.is_distinct_from(
                                                            change.new_static_ip))))))
    return stmt.scalar_subquery()


def _queued(session):
    return exists().where(CoaRequest.status == "pending", CoaRequest.acct_unique_id == session.acctuniqueid)


def _bounded(stmt, limit: int) -> tuple[list, int]:
    rows = db.session.execute(stmt.add_columns(func.count().over().label("total")).limit(limit)).mappings().all()
    return rows, (rows[0]["total"] if rows else 0)


def _stale_sessions(cutoff: datetime, limit: int) -> tuple[list[Mismatch], int]:
    r, s = RadAcct, aliased(Subscription)
    inner = (select(r.radacctid, r.acctsessionid, r.acctuniqueid, r.username, r.nasipaddress, r.acctstarttime,
                    s.id.label("subscription_id"), s.customer_id, s.status, s.suspension_reason,
                    Customer.name.label("customer_name"),
                    _profile(s.status, SuspensionPolicy.action).label("profile"),
                    _last_change(s.id, relevant_only=True).label("changed_at"))
             .join(s, and_(same_login(s.pppoe_username, r.username), s.status != "cancelled"))
             .join(Customer, Customer.id == s.customer_id)
             .outerjoin(SuspensionPolicy, SuspensionPolicy.reason == s.suspension_reason)
             .where(r.acctstoptime.is_(None)).subquery())
    changed_in_place = exists().where(
        CoaRequest.subscription_id == inner.c.subscription_id, CoaRequest.acct_unique_id == inner.c.acctuniqueid,
        CoaRequest.kind == "coa", CoaRequest.status == "acked", CoaRequest.created_at >= inner.c.changed_at)
    older = and_(inner.c.changed_at.is_not(None),
                 or_(inner.c.acctstarttime.is_(None), inner.c.acctstarttime < inner.c.changed_at), ~changed_in_place)
    stmt = (select(inner, _queued(inner.c).label("queued"))
            .where(or_(inner.c.changed_at.is_(None), inner.c.changed_at <= cutoff),
                   or_(inner.c.profile == "reject", older))
            .order_by(inner.c.radacctid))
    rows, total = _bounded(stmt, limit)
    return [_session_row("stale_session", row, _stale_detail(row)) for row in rows], total


def _stale_detail(row) -> str:
    if row["profile"] == "reject":
        state = "has not started yet" if row["status"] == "pending" else \
            f"is suspended {_REASONS.get(row['suspension_reason'], '')}".rstrip()
        return f"Still online, but the subscription {state} and the network refuses it: it should be disconnected."
    if row["profile"] == "walled_garden":
        return (f"Still on the session it had before it was suspended {_REASONS.get(row['suspension_reason'], '')}: "
                f"it should be in the walled garden.")
    return (f"Online since before its last change ({_when(row['changed_at'])}) and not updated since: "
            f"it may still run on the old plan, address or walled garden.")


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _session_row(kind: str, row, detail: str, **extra) -> Mismatch:
    values = dict(kind=kind, detail=detail, login=row["username"], radacct_id=row["radacctid"],
                  session_id=row["acctsessionid"], nas=str(row["nasipaddress"]), since=row["acctstarttime"],
                  queued=bool(row["queued"]), subscription_id=row["subscription_id"],
                  customer_id=row["customer_id"], customer_name=row["customer_name"])
    return Mismatch(**{**values, **extra})


def _refusals(subscription_id: int | None = None):
    """Active subscriptions whose last login attempt since their last change was refused, not acknowledged."""
    s, p, later = aliased(Subscription), aliased(RadPostAuth), aliased(RadPostAuth)
    last_attempt = (select(p.id).where(same_login(p.username, s.pppoe_username))
                    .order_by(p.authdate.desc(), p.id.desc())
                    .limit(1).scalar_subquery())
    inner = (select(s.id.label("subscription_id"), s.customer_id, s.pppoe_username,
                    Customer.name.label("customer_name"), _last_change(s.id, relevant_only=False).label("changed_at"),
                    last_attempt.label("attempt_id"),
                    exists().where(NetworkCredential.subscription_id == s.id).label("has_password"))
             .join(Customer, Customer.id == s.customer_id)
             .where(s.status == "active", s.pppoe_username.is_not(None)))
    if subscription_id is not None:
        inner = inner.where(s.id == subscription_id)
    inner = inner.subquery()
    attempt = aliased(RadPostAuth)
    last_accept = (select(func.max(later.authdate)).where(same_login(later.username, inner.c.pppoe_username),
                                                          later.reply == "Access-Accept").scalar_subquery())
    # An acknowledgement holds until the subscription changes or the network accepts it again.
    acknowledged = exists().where(
        AuditEvent.entity_type == "subscriptions", AuditEvent.entity_id == inner.c.subscription_id,
        AuditEvent.action == ACKNOWLEDGED, or_(inner.c.changed_at.is_(None), AuditEvent.at > inner.c.changed_at),
        or_(last_accept.is_(None), AuditEvent.at > last_accept))
    return (select(inner, attempt.authdate)
            .join(attempt, attempt.id == inner.c.attempt_id)
            .where(attempt.reply == "Access-Reject",
                   or_(inner.c.changed_at.is_(None), attempt.authdate > inner.c.changed_at), ~acknowledged)
            .order_by(inner.c.subscription_id))


def _rejected_while_active(limit: int) -> tuple[list[Mismatch], int]:
    rows, total = _bounded(_refusals(), limit)
    found = []
    for row in rows:
        why = "" if row["has_password"] else " No PPPoE password is set: set one on the subscription."
        found.append(Mismatch(
            "rejected_while_active", f"Active, but the network refused its last login ({_when(row['authdate'])}): "
            f"a wrong or missing password on the customer's router?{why}",
            login=row["pppoe_username"], subscription_id=row["subscription_id"], customer_id=row["customer_id"],
            customer_name=row["customer_name"], since=row["authdate"]))
    return found, total


def _unknown_logins(cutoff: datetime, limit: int) -> tuple[list[Mismatch], int]:
    r, live, gone = RadAcct, aliased(Subscription), aliased(Subscription)
    login = login_column(Subscription.pppoe_username)
    cancelled = (select(login.label("login"), func.max(Subscription.id).label("id"))
                 .where(Subscription.status == "cancelled", Subscription.pppoe_username.is_not(None))
                 .group_by(login).subquery())
    changed_at = _last_change(gone.id, relevant_only=False)
    stmt = (select(r.radacctid, r.acctsessionid, r.acctuniqueid, r.username, r.nasipaddress, r.acctstarttime,
                   gone.id.label("subscription_id"), gone.customer_id, Customer.name.label("customer_name"),
                   _queued(r).label("queued"))
            .outerjoin(cancelled, cancelled.c.login == login_column(r.username))
            .outerjoin(gone, gone.id == cancelled.c.id)
            .outerjoin(Customer, Customer.id == gone.customer_id)
            .where(r.acctstoptime.is_(None),
                   ~exists().where(same_login(live.pppoe_username, r.username), live.status != "cancelled"),
                   or_(gone.id.is_(None), changed_at.is_(None), changed_at <= cutoff))
            .order_by(r.radacctid))
    rows, total = _bounded(stmt, limit)
    found = []
    for row in rows:
        if row["username"] is None:
            detail = "An open session without a login: no subscription can be behind it."
        elif row["subscription_id"]:
            detail = f"The login {row['username']} belongs only to a cancelled subscription: it should be offline."
        else:
            detail = f"No subscription has the login {row['username']}: nobody is billed for this session."
        found.append(_session_row("unknown_login", row, detail))
    return found, total


def _address_conflicts(limit: int) -> tuple[list[Mismatch], int]:
    r, owner = RadAcct, aliased(Subscription)
    # radacct holds inet on PostgreSQL (its host() is the plain address that static_ip stores), text elsewhere.
    address = func.host(r.framedipaddress) if is_postgres() else r.framedipaddress
    stmt = (select(r.radacctid, r.acctsessionid, r.acctuniqueid, r.username, r.nasipaddress, r.acctstarttime,
                   owner.id.label("subscription_id"), owner.customer_id, owner.pppoe_username.label("owner_login"),
                   owner.static_ip, Customer.name.label("customer_name"), _queued(r).label("queued"))
            .join(owner, and_(owner.static_ip == address, owner.status != "cancelled"))
            .join(Customer, Customer.id == owner.customer_id)
            .where(r.acctstoptime.is_(None), r.framedipaddress.is_not(None),
                   login_column(r.username).is_distinct_from(login_column(owner.pppoe_username)))
            .order_by(r.radacctid))
    rows, total = _bounded(stmt, limit)
    found = [_session_row("address_conflict", row, (
        f"The session of {row['username'] or 'an unknown login'} holds {row['static_ip']}, the static IP of "
        f"{row['customer_name']}'s subscription (login {row['owner_login'] or '—'}).")) for row in rows]
    return found, total


def find_mismatches(limit: int = 100, now: datetime | None = None) -> Report:
    """Run the four checks (one statement each); at most `limit` rows per kind, with every kind's full count."""
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid("Please correct the highlighted fields.", {"limit": f"Between 1 and {MAX_LIMIT}."})
    cutoff = (now or utcnow()) - SETTLE
    rows, counts = [], {}
    for kind, found in (("stale_session", _stale_sessions(cutoff, limit)),
                        ("rejected_while_active", _rejected_while_active(limit)),
                        ("unknown_login", _unknown_logins(cutoff, limit)),
                        ("address_conflict", _address_conflicts(limit))):
        rows.extend(found[0])
        counts[kind] = found[1]
    return Report(rows=rows, counts=counts, coa=coa.counts_by_status())


def check(limit: int, triggered_by: str) -> tuple[Report, JobRun]:
    """Find the mismatches and record the check as a finished job run (what the page and /metrics show)."""
    report = find_mismatches(limit=limit)
    run = job_runs.start_run(RUN_KIND, today(), dry_run=False, triggered_by=triggered_by, total_chunks=1)
    job_runs.chunk_done(run.id, {**report.counts, "mismatches": report.total, "coa_failed": report.coa["failed"],
                                 "coa_pending": report.coa["pending"]})
    return report, run


def record_failure(error: str, triggered_by: str) -> JobRun:
    """Record a check that could not finish, as a failed run (the failed-run alert sees it)."""
    run = job_runs.start_run(RUN_KIND, today(), dry_run=False, triggered_by=triggered_by, total_chunks=1)
    return job_runs.fail_run(run.id, error)


def last_check() -> JobRun | None:
    """The newest finished check, if any ran."""
    return db.session.scalar(select(JobRun).where(JobRun.kind == RUN_KIND, JobRun.status == "succeeded")
                             .order_by(JobRun.id.desc()).limit(1))


def last_counts() -> dict[str, int] | None:
    """What the newest finished check found per kind (None before the first): /metrics reads this, not a check."""
    run = last_check()
    return None if run is None else {kind: int((run.counts or {}).get(kind, 0)) for kind in KINDS}


def disconnect(radacct_id: int) -> CoaRequest:
    """Queue a Disconnect-Request for a mismatched session (one audit event); refuse a second while one waits."""
    unique_id = db.session.scalar(select(RadAcct.acctuniqueid).where(RadAcct.radacctid == radacct_id))
    if unique_id is None:
        raise NotFound("No such session.")
    if db.session.scalar(select(CoaRequest.id).where(CoaRequest.status == "pending", CoaRequest.kind == "disconnect",
                                                     CoaRequest.acct_unique_id == unique_id).limit(1)):
        raise BusinessRuleViolation("A Disconnect-Request for this session is already on its way.")
    return coa.disconnect_session(radacct_id, reason=FIX_REASON)


def resend(subscription_id: int) -> list:
    """Send the subscription's open sessions what the network says now (one audit event)."""
    return coa.resend_for_subscription(subscription_id)


def acknowledge_rejection(subscription_id: int) -> Subscription:
    """Take a refused active login off the list until the subscription changes or logs in again (audited)."""
    sub = db.session.get(Subscription, subscription_id)
    if sub is None:
        raise NotFound("No such subscription.")
    row = db.session.execute(_refusals(subscription_id)).mappings().first()
    if row is None:
        raise BusinessRuleViolation("The network has not refused this subscription since its last change.")
    audit.record(ACKNOWLEDGED, sub, customer_id=sub.customer_id,
                 after={"pppoe_username": sub.pppoe_username, "refused_at": row["authdate"].isoformat()})
    db.session.flush()
    return sub

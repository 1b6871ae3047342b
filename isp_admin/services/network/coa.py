"""Change of Authorization: turn committed subscription changes into Disconnect/CoA requests, and send them.

The subscriptions table's trigger writes a network_changes row in the very transaction that suspends, resumes,
cancels, re-plans or re-addresses a subscription (whatever path did it). `process_changes` turns pending changes
into one request per open session (the sessions open NOW, from radacct) and marks them processed; `send_due` sends
each due request and records the answer. A NAS that does not answer is retried with growing waits, then the request
is marked failed, on the Network page, where staff retry it: never silently dropped.

What a change needs (old network profile → current one):
- service ↔ walled garden ↔ rejected, a renamed login, a new static IP: Disconnect (the next login gets the truth;
  a pool or an address cannot change inside a session);
- a new plan while in service: CoA-Request with the new plan's reply attributes (the rate); a NAS that refuses it
  (CoA-NAK) gets a Disconnect instead.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select, text

from isp_admin.errors import BusinessRuleViolation, NotFound
from isp_admin.extensions import db
from isp_admin.models import CoaRequest, Nas, NetworkChange, Plan, RadAcct, Subscription, SuspensionPolicy
from isp_admin.models.base import utcnow
from isp_admin.services.network.logins import login_column, login_key
from isp_admin.services.network.radius import SESSION_GONE, send_change
from isp_admin.services.platform import audit
from isp_admin.services.platform.bulk import is_postgres

log = logging.getLogger(__name__)
BATCH = 500


@dataclass(frozen=True)
class Profile:
    """What the network gives a login: service on a plan (with its static IP), the walled garden, or reject."""

    kind: str  # "service" | "walled_garden" | "reject"
    plan_id: int | None = None
    static_ip: str | None = None


def profile_of(status: str | None, reason: str | None, plan_id: int | None, static_ip: str | None,
               policies: dict[str, str]) -> Profile:
    """The profile the RADIUS views give a subscription in this state (the views' CASE, in Python)."""
    if status == "active":
        return Profile("service", plan_id, static_ip)
    if status == "suspended" and policies.get(reason or "") == "walled_garden":
        return Profile("walled_garden")
    return Profile("reject")


def policies() -> dict[str, str]:
    """The suspension reason → network action table."""
    return dict(db.session.execute(select(SuspensionPolicy.reason, SuspensionPolicy.action)).all())


def _take_changes(limit: int) -> list[NetworkChange]:
    stmt = (select(NetworkChange).where(NetworkChange.processed_at.is_(None)).order_by(NetworkChange.id)
            .limit(limit).execution_options(populate_existing=True))
    if is_postgres():
        stmt = stmt.with_for_update(skip_locked=True)
    return list(db.session.scalars(stmt))


def routers_by_address() -> dict[str, Nas]:
    """Every router by its address, the key radacct names a session's router by."""
    return {n.nasname: n for n in db.session.scalars(select(Nas))}


def open_sessions(username: str) -> list[RadAcct]:
    """The login's sessions with no stop yet, whatever the case the router sent it in (ix_radacct_open_username)."""
    return list(db.session.scalars(select(RadAcct).where(login_column(RadAcct.username) == login_key(username),
                                                         RadAcct.acctstoptime.is_(None))
                                   .order_by(RadAcct.radacctid)))


def plan_reply_attributes(plan_id: int) -> dict[str, str]:
    """The reply attributes the radgroupreply view gives a plan's group (what a CoA changes a session to)."""
    code = db.session.scalar(select(Plan.code).where(Plan.id == plan_id))
    rows = db.session.execute(text("SELECT attribute, value FROM radgroupreply WHERE groupname = :g ORDER BY id"),
                              {"g": f"plan-{code}"}).all()
    return {attribute: value for attribute, value in rows}


def process_changes(limit: int = BATCH) -> int:
    """Turn pending changes into CoA requests for the sessions open now; return how many changes were handled."""
    changes = _take_changes(limit)
    if not changes:
        return 0
    table = policies()
    by_subscription: dict[int, list[NetworkChange]] = {}
    for change in changes:
        by_subscription.setdefault(change.subscription_id, []).append(change)
    subs = {s.id: s for s in db.session.scalars(select(Subscription).where(Subscription.id.in_(by_subscription)))}
    nas_by_address = routers_by_address()
    now = utcnow()
    for sub_id, group in by_subscription.items():
        first, last = group[0], group[-1]
        sub = subs.get(sub_id)
        if sub is not None:
            # Several changes since the last sweep collapse into one: from the state before the first to now.
            before = profile_of(first.old_status, first.old_reason, first.old_plan_id, first.old_static_ip, table)
            after = profile_of(sub.status, sub.suspension_reason, sub.plan_id, sub.static_ip, table)
            _request_for(last, sub, first.old_username, before, after, nas_by_address)
        for change in group:
            change.processed_at = now
    db.session.flush()
    return len(changes)


def _request_for(change: NetworkChange, sub: Subscription, old_username: str | None, before: Profile,
                 after: Profile, nas_by_address: dict[str, Nas]) -> None:
    # Sessions under the login before the changes, and under today's login when it differs: a login given or
    # renamed since the last sweep may already carry a session that began in the state before (walled garden).
    # A login re-typed in another case is the same login (its sessions carry on): neither renamed nor listed twice.
    for username in dict.fromkeys(login_key(name) for name in (old_username, sub.pppoe_username) if name):
        renamed = username != login_key(sub.pppoe_username)
        if renamed or before.kind != after.kind or (after.kind == "service" and before.static_ip != after.static_ip):
            kind, reason, attributes = "disconnect", _reason(before, after, renamed), None
        elif after.kind == "service" and before.plan_id != after.plan_id:
            kind, reason, attributes = "coa", "plan_change", plan_reply_attributes(after.plan_id)
        else:
            continue
        for session in open_sessions(username):
            _add_request(session, kind=kind, reason=reason, attributes=attributes, change_id=change.id,
                         subscription_id=sub.id, nas_by_address=nas_by_address)


def _reason(before: Profile, after: Profile, renamed: bool) -> str:
    if renamed:
        return "login_changed"
    if after.kind == "service" and before.kind != "service":
        return "reactivated"
    if after.kind == "walled_garden":
        return "walled_garden"
    if after.kind == "reject":
        return "rejected"
    return "address_changed"


def _add_request(session: RadAcct, *, kind: str, reason: str, attributes: dict | None, change_id: int | None,
                 subscription_id: int | None, nas_by_address: dict[str, Nas],
                 requested_by: str | None = None) -> CoaRequest:
    address = str(session.nasipaddress)
    nas = nas_by_address.get(address)
    request = CoaRequest(change_id=change_id, subscription_id=subscription_id, nas_id=nas.id if nas else None,
                         nas_address=address, username=session.username, acct_session_id=session.acctsessionid,
                         acct_unique_id=session.acctuniqueid,
                         framed_ip=str(session.framedipaddress) if session.framedipaddress else None,
                         kind=kind, reason=reason, attributes=json.dumps(attributes) if attributes else None,
                         status="pending", attempts=0, next_attempt_at=utcnow(), requested_by=requested_by)
    if nas is None:
        request.status = "failed"
        request.completed_at = utcnow()
        request.last_error = (f"No NAS record for {address}: add it under Network → Routers (with its secret and "
                              f"CoA port), then retry.")
    db.session.add(request)
    db.session.flush()
    return request


def due_ids(now: datetime | None = None, limit: int = BATCH) -> list[int]:
    """The pending requests whose next attempt is due, oldest first."""
    stmt = (select(CoaRequest.id).where(CoaRequest.status == "pending",
                                        CoaRequest.next_attempt_at <= (now or utcnow()))
            .order_by(CoaRequest.next_attempt_at, CoaRequest.id).limit(limit))
    return list(db.session.scalars(stmt))


def backoff(attempts: int) -> timedelta:
    """The wait before attempt `attempts + 1`: 30 s, 1 min, 2 min … at most an hour."""
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


def _take_request(request_id: int) -> CoaRequest | None:
    stmt = (select(CoaRequest).where(CoaRequest.id == request_id, CoaRequest.status == "pending")
            .execution_options(populate_existing=True))
    if is_postgres():
        stmt = stmt.with_for_update(skip_locked=True)
    return db.session.scalar(stmt)


def send(request_id: int, now: datetime | None = None) -> str:
    """Send one pending request; return "acked", "retry", "failed", "fallback" or "skipped"."""
    request = _take_request(request_id)
    if request is None:
        return "skipped"  # answered already, or another worker holds it
    nas = db.session.get(Nas, request.nas_id) if request.nas_id else None
    now = now or utcnow()
    request.attempts += 1
    if nas is None:
        return _finish(request, "failed", now, error=f"The NAS {request.nas_address} was removed.")
    config = current_app.config
    outcome = send_change(nas_address=nas.nasname, coa_port=nas.coa_port, secret=nas.secret, kind=request.kind,
                          username=request.username, acct_session_id=request.acct_session_id,
                          framed_ip=request.framed_ip,
                          attributes=json.loads(request.attributes) if request.attributes else None,
                          timeout=config["NETWORK_COA_TIMEOUT"])
    request.response = outcome.response
    if outcome.acked:
        return _finish(request, "acked", now)
    if outcome.answered:
        if request.kind == "disconnect" and outcome.error_cause == SESSION_GONE:
            return _finish(request, "acked", now, error="The NAS no longer had this session.")
        error = f"{outcome.response} (Error-Cause {outcome.error_cause})" if outcome.error_cause else outcome.response
        if request.kind == "coa":
            # The NAS will not change the session in place: end it, so the next login carries the new plan.
            fallback = CoaRequest(change_id=None, subscription_id=request.subscription_id, nas_id=request.nas_id,
                                  nas_address=request.nas_address, username=request.username,
                                  acct_session_id=request.acct_session_id, acct_unique_id=request.acct_unique_id,
                                  framed_ip=request.framed_ip, kind="disconnect", reason="coa_refused",
                                  status="pending", attempts=0, next_attempt_at=now)
            db.session.add(fallback)
            _finish(request, "failed", now, error=f"{error}; a Disconnect-Request follows.")
            return "fallback"
        return _finish(request, "failed", now, error=error)
    if request.attempts >= config["NETWORK_COA_MAX_ATTEMPTS"]:
        return _finish(request, "failed", now, error=f"{outcome.error}; gave up after {request.attempts} attempts.")
    request.last_error = outcome.error
    request.next_attempt_at = now + backoff(request.attempts)
    db.session.flush()
    log.warning("CoA %s to %s: %s (attempt %s)", request.id, request.nas_address, outcome.error, request.attempts)
    return "retry"


def _finish(request: CoaRequest, status: str, now: datetime, error: str | None = None) -> str:
    request.status = status
    request.completed_at = now
    request.last_error = error
    db.session.flush()
    return status


def send_due(commit: Callable[[], None], now: datetime | None = None, limit: int = BATCH) -> dict:
    """Send every due request, committing after each (a packet that left cannot be rolled back); return counts."""
    counts = {"acked": 0, "retry": 0, "failed": 0, "fallback": 0, "skipped": 0}
    for request_id in due_ids(now, limit):
        counts[send(request_id, now)] += 1
        commit()
    return counts


def dispatch(commit: Callable[[], None], now: datetime | None = None) -> dict:
    """The sweep: process pending changes into requests, then send what is due (fallbacks included)."""
    changes = 0
    while handled := process_changes():
        changes += handled
        commit()
        if handled < BATCH:
            break
    counts = send_due(commit, now)
    if counts["fallback"]:
        more = send_due(commit, now)
        counts = {key: counts[key] + more[key] for key in counts}
    return {"changes": changes, **counts}


def retry_request(request_id: int) -> CoaRequest:
    """Put a failed request back in the queue with fresh attempts (audited)."""
    request = db.session.get(CoaRequest, request_id)
    if request is None:
        raise NotFound("No such CoA request.")
    if request.status != "failed":
        raise BusinessRuleViolation("Only a failed request can be retried.")
    if request.nas_id is None:
        nas = db.session.scalar(select(Nas).where(Nas.nasname == request.nas_address))
        if nas is None:
            raise BusinessRuleViolation(f"There is still no NAS record for {request.nas_address}; add it first.")
        request.nas_id = nas.id
    request.status, request.attempts, request.last_error, request.completed_at = "pending", 0, None, None
    request.next_attempt_at = utcnow()
    audit.record("coa.retry", request, after={"nas": request.nas_address, "kind": request.kind})
    db.session.flush()
    return request


def disconnect_session(radacct_id: int, reason: str = "manual") -> CoaRequest:
    """Queue a Disconnect-Request for one open session (a staff action; audited)."""
    session = db.session.get(RadAcct, radacct_id)
    if session is None:
        raise NotFound("No such session.")
    if session.acctstoptime is not None:
        raise BusinessRuleViolation("This session has already ended.")
    sub_id = db.session.scalar(select(Subscription.id).where(login_column(Subscription.pppoe_username)
                                                             == login_key(session.username),
                                                             Subscription.status != "cancelled"))
    nas_by_address = {n.nasname: n for n in db.session.scalars(select(Nas).where(
        Nas.nasname == str(session.nasipaddress)))}
    actor = audit.current_actor()
    request = _add_request(session, kind="disconnect", reason=reason, attributes=None, change_id=None,
                           subscription_id=sub_id, nas_by_address=nas_by_address, requested_by=actor.label)
    customer_id = db.session.scalar(select(Subscription.customer_id).where(Subscription.id == sub_id)) \
        if sub_id else None
    audit.record("session.disconnect", request, customer_id=customer_id,
                 after={"username": session.username, "session": session.acctsessionid,
                        "nas": request.nas_address, "reason": reason})
    return request


def resend_for_subscription(subscription_id: int) -> list[CoaRequest]:
    """Send the subscription's open sessions what the network says now: its plan's CoA, or a Disconnect."""
    sub = db.session.get(Subscription, subscription_id)
    if sub is None:
        raise NotFound("No such subscription.")
    if not sub.pppoe_username:
        raise BusinessRuleViolation("This subscription has no PPPoE login.")
    sessions = open_sessions(sub.pppoe_username)
    if not sessions:
        raise BusinessRuleViolation("This login has no open session to update.")
    now_profile = profile_of(sub.status, sub.suspension_reason, sub.plan_id, sub.static_ip, policies())
    nas_by_address = routers_by_address()
    actor = audit.current_actor()
    requests = []
    for session in sessions:
        if now_profile.kind == "service":
            requests.append(_add_request(session, kind="coa", reason="resend", change_id=None,
                                         attributes=plan_reply_attributes(sub.plan_id), subscription_id=sub.id,
                                         nas_by_address=nas_by_address, requested_by=actor.label))
        else:
            requests.append(_add_request(session, kind="disconnect", reason="resend", attributes=None,
                                         change_id=None, subscription_id=sub.id, nas_by_address=nas_by_address,
                                         requested_by=actor.label))
    audit.record("subscription.coa_resend", sub, customer_id=sub.customer_id,
                 after={"requests": [r.id for r in requests], "profile": now_profile.kind})
    return requests


def counts_by_status() -> dict[str, int]:
    """How many requests are pending and failed (the dashboard's and the alert's figures)."""
    from sqlalchemy import func

    rows = db.session.execute(select(CoaRequest.status, func.count()).where(CoaRequest.status != "acked")
                              .group_by(CoaRequest.status)).all()
    return {"pending": 0, "failed": 0, **dict(rows)}

"""The status sweep: ask the provider about pending payments whose notification never came; expire abandoned ones.

Each attempt is its own transaction, committed through the edge's `commit`: the provider is asked with no
transaction open (a slow provider holds no lock and no idle transaction), then its answer is applied with
events.apply_notice, which makes it exactly once even when the webhook or callback lands at the same moment.
One provider failing is counted and logged, and the sweep goes on with the others.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from flask import current_app
from sqlalchemy import and_, inspect, or_, select

from isp_admin.errors import AppError
from isp_admin.extensions import db
from isp_admin.models import PaymentAttempt
from isp_admin.services.billing.ledger import lock_customer
from isp_admin.services.payments.events import apply_notice
from isp_admin.services.payments.providers.base import Notice
from isp_admin.services.payments.providers.registry import get_provider
from isp_admin.services.platform import audit

log = logging.getLogger(__name__)
# An attempt the provider never acknowledged (no reference: the start failed half-way) cannot be asked about.
UNSTARTED_EXPIRY = timedelta(hours=1)
COUNTS = ("checked", "paid", "failed", "pending", "errors", "expired")


def poll_pending(now: datetime, commit: Callable[[], None], limit: int = 200) -> dict[str, int]:
    """Query the provider about each pending attempt due a check, then expire the abandoned; return the counts."""
    config = current_app.config
    after = timedelta(minutes=config["PAYMENTS_POLL_AFTER_MINUTES"])
    expire_before = now - timedelta(hours=config["PAYMENTS_EXPIRE_HOURS"])
    counts = dict.fromkeys(COUNTS, 0)
    for attempt_id in due_for_check(now, after, expire_before, limit):
        outcome = check_attempt(attempt_id, now, commit)
        if outcome is not None:
            counts["checked"] += 1
            counts[outcome] += 1
    for attempt_id in due_for_expiry(now, expire_before, limit):
        counts["expired"] += expire_attempt(attempt_id, now, commit)
    return counts


def due_for_check(now: datetime, after: timedelta, expire_before: datetime, limit: int) -> list[int]:
    """Pending attempts the provider knows, older than `after` and not asked within `after`, oldest first."""
    ids = list(db.session.scalars(
        select(PaymentAttempt.id).where(
            PaymentAttempt.status == "pending", PaymentAttempt.provider_ref.is_not(None),
            PaymentAttempt.created_at <= now - after, PaymentAttempt.created_at >= expire_before,
            or_(PaymentAttempt.checked_at.is_(None), PaymentAttempt.checked_at <= now - after))
        .order_by(PaymentAttempt.created_at, PaymentAttempt.id).limit(limit)))
    db.session.rollback()  # a read only: no transaction stays open while the providers are asked
    return ids


def due_for_expiry(now: datetime, expire_before: datetime, limit: int) -> list[int]:
    """Pending attempts past PAYMENTS_EXPIRE_HOURS, and those never started at the provider for an hour."""
    ids = list(db.session.scalars(
        select(PaymentAttempt.id).where(
            PaymentAttempt.status == "pending",
            or_(PaymentAttempt.created_at < expire_before,
                and_(PaymentAttempt.provider_ref.is_(None), PaymentAttempt.created_at < now - UNSTARTED_EXPIRY)))
        .order_by(PaymentAttempt.created_at, PaymentAttempt.id).limit(limit)))
    db.session.rollback()
    return ids


def check_attempt(attempt_id: int, now: datetime, commit: Callable[[], None]) -> str | None:
    """Ask the provider about one attempt and apply its answer; return paid, failed, pending or errors (None if
    it was settled meanwhile)."""
    attempt = db.session.get(PaymentAttempt, attempt_id)
    if attempt is None or attempt.status != "pending":
        db.session.rollback()
        return None
    copy = _detached_copy(attempt)
    db.session.rollback()  # the provider call below runs outside any transaction and any lock
    try:
        notice = get_provider(copy.provider).query(copy)
    except Exception as exc:  # noqa: BLE001 - one provider's failure (or bug) never stops the sweep
        log.warning("payment status query failed", extra={"attempt_id": attempt_id, "provider": copy.provider,
                                                           "error": f"{type(exc).__name__}: {exc}"[:300]})
        _record_check(attempt_id, copy.customer_id, now, commit)
        return "errors"
    try:
        outcome = _apply(copy, notice, now)
        commit()
    except AppError as exc:  # refused by the ledger (e.g. a closed customer): kept pending, staff see the log
        db.session.rollback()
        log.error("payment status not applied", extra={"attempt_id": attempt_id, "error": exc.message})
        _record_check(attempt_id, copy.customer_id, now, commit)
        return "errors"
    return outcome


def _apply(copy: PaymentAttempt, notice: Notice | None, now: datetime) -> str:
    outcome = "pending"
    if notice is not None:
        apply_notice(copy.provider, notice, _business_date(now))
        outcome = {"succeeded": "paid", "failed": "failed"}.get(notice.kind, "pending")
    _mark_checked(copy.id, copy.customer_id, now)
    return outcome


def _record_check(attempt_id: int, customer_id: int, now: datetime, commit: Callable[[], None]) -> None:
    _mark_checked(attempt_id, customer_id, now)
    commit()


def _mark_checked(attempt_id: int, customer_id: int, now: datetime) -> None:
    # Even an unanswerable attempt moves to the back of the line, so a few failing ones never starve the rest.
    lock_customer(customer_id)
    attempt = db.session.get(PaymentAttempt, attempt_id)
    attempt.checked_at, attempt.checks = now, attempt.checks + 1
    db.session.flush()


def expire_attempt(attempt_id: int, now: datetime, commit: Callable[[], None]) -> int:
    """Give up on one pending attempt (audited); 1 if it expired, 0 if an answer came meanwhile."""
    attempt = db.session.get(PaymentAttempt, attempt_id)
    if attempt is None:
        db.session.rollback()
        return 0
    lock_customer(attempt.customer_id)
    attempt = db.session.get(PaymentAttempt, attempt_id)  # fresh: a notice may have settled it meanwhile
    if attempt.status != "pending":
        db.session.rollback()
        return 0
    hours = current_app.config["PAYMENTS_EXPIRE_HOURS"]
    attempt.status = "expired"
    attempt.failure_reason = (f"No answer from the provider within {hours} hours." if attempt.provider_ref
                              else "The provider never acknowledged the payment.")
    audit.record("payment_attempt.expire", attempt, before={"status": "pending"},
                 after={"status": "expired", "reason": attempt.failure_reason}, customer_id=attempt.customer_id)
    db.session.flush()
    commit()
    return 1


def _detached_copy(attempt: PaymentAttempt) -> PaymentAttempt:
    """A copy of the attempt's columns, in no session: the provider reads it while no transaction is open."""
    return PaymentAttempt(**{column.key: getattr(attempt, column.key)
                             for column in inspect(PaymentAttempt).column_attrs})


def _business_date(now: datetime) -> date:
    return now.astimezone(ZoneInfo(current_app.config["TIMEZONE"])).date()

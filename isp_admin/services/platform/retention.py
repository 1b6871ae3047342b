"""Data retention: delete old operational rows (delivered notifications, finished job runs, API idempotency
keys past their 24 hours), set-based.

Money records are never touched: invoices, lines, payments, credit notes, allocations and the audit trail
stay forever. A job run that issued invoices is part of that trail (invoices.job_run_id points at it), so it
is kept too; deleting it would rewrite those invoices' link.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, exists, func, select

from isp_admin.extensions import db
from isp_admin.models import IdempotencyKey, Invoice, JobRun, Notification
from isp_admin.models.base import utcnow

# Stripe's promise: a client may retry a request with the same Idempotency-Key for at least a day.
IDEMPOTENCY_KEY_TTL = timedelta(hours=24)


@dataclass
class Cleanup:
    """What a cleanup deleted (or would delete), and what it kept on purpose."""

    notifications: int
    job_runs: int
    job_runs_kept: int
    days: int
    idempotency_keys: int


def _old_notifications(cutoff):
    # Queued mail is kept whatever its age: deleting it would drop an email silently.
    return (Notification.created_at < cutoff, Notification.status.in_(("sent", "failed")))


def _old_job_runs(cutoff):
    issued_invoices = exists().where(Invoice.job_run_id == JobRun.id)
    return (JobRun.started_at < cutoff, JobRun.status != "running", ~issued_invoices)


def forget_expired_idempotency_keys(now=None, dry_run: bool = False) -> int:
    """Delete API idempotency keys older than IDEMPOTENCY_KEY_TTL (or just count them); return how many."""
    expired = IdempotencyKey.created_at <= (now or utcnow()) - IDEMPOTENCY_KEY_TTL
    if dry_run:
        return db.session.scalar(select(func.count()).select_from(IdempotencyKey).where(expired))
    return db.session.execute(delete(IdempotencyKey).where(expired)
                              .execution_options(synchronize_session=False)).rowcount


def cleanup_old_data(days: int, dry_run: bool = False) -> Cleanup:
    """Delete notifications, job runs older than `days` days and expired idempotency keys (or count them)."""
    if days < 1:
        raise ValueError("days must be at least 1")
    cutoff = utcnow() - timedelta(days=days)
    kept = db.session.scalar(select(func.count()).select_from(JobRun).where(
        JobRun.started_at < cutoff, exists().where(Invoice.job_run_id == JobRun.id)))
    if dry_run:
        notifications = db.session.scalar(select(func.count()).select_from(Notification)
                                          .where(*_old_notifications(cutoff)))
        job_runs = db.session.scalar(select(func.count()).select_from(JobRun).where(*_old_job_runs(cutoff)))
        return Cleanup(notifications, job_runs, kept, days, forget_expired_idempotency_keys(dry_run=True))
    notifications = db.session.execute(delete(Notification).where(*_old_notifications(cutoff))
                                       .execution_options(synchronize_session=False)).rowcount
    job_runs = db.session.execute(delete(JobRun).where(*_old_job_runs(cutoff))
                                  .execution_options(synchronize_session=False)).rowcount
    return Cleanup(notifications, job_runs, kept, days, forget_expired_idempotency_keys())

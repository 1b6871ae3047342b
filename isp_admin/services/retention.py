"""Data retention: delete old operational rows (delivered notifications, finished job runs), set-based.

Money records are never touched: invoices, lines, payments, credit notes, allocations and the audit trail
stay forever. A job run that issued invoices is part of that trail (invoices.job_run_id points at it), so it
is kept too; deleting it would rewrite those invoices' link.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, exists, func, select

from isp_admin.extensions import db
from isp_admin.models import Invoice, JobRun, Notification
from isp_admin.models.base import utcnow


@dataclass
class Cleanup:
    """What a cleanup deleted (or would delete), and what it kept on purpose."""

    notifications: int
    job_runs: int
    job_runs_kept: int
    days: int


def _old_notifications(cutoff):
    # Queued mail is kept whatever its age: deleting it would drop an email silently.
    return (Notification.created_at < cutoff, Notification.status.in_(("sent", "failed")))


def _old_job_runs(cutoff):
    issued_invoices = exists().where(Invoice.job_run_id == JobRun.id)
    return (JobRun.started_at < cutoff, JobRun.status != "running", ~issued_invoices)


def cleanup_old_data(days: int, dry_run: bool = False) -> Cleanup:
    """Delete notifications and job runs older than `days` days (or just count them); return the counts."""
    if days < 1:
        raise ValueError("days must be at least 1")
    cutoff = utcnow() - timedelta(days=days)
    kept = db.session.scalar(select(func.count()).select_from(JobRun).where(
        JobRun.started_at < cutoff, exists().where(Invoice.job_run_id == JobRun.id)))
    if dry_run:
        notifications = db.session.scalar(select(func.count()).select_from(Notification)
                                          .where(*_old_notifications(cutoff)))
        job_runs = db.session.scalar(select(func.count()).select_from(JobRun).where(*_old_job_runs(cutoff)))
        return Cleanup(notifications, job_runs, kept, days)
    notifications = db.session.execute(delete(Notification).where(*_old_notifications(cutoff))
                                       .execution_options(synchronize_session=False)).rowcount
    job_runs = db.session.execute(delete(JobRun).where(*_old_job_runs(cutoff))
                                  .execution_options(synchronize_session=False)).rowcount
    return Cleanup(notifications, job_runs, kept, days)

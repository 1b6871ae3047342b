"""Read-side queries for the billing operations pages: job runs and the outbox (the dry run is steps.preview)."""
from __future__ import annotations

from sqlalchemy import select

from isp_admin.errors import NotFound
from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, JobRun, Notification
from isp_admin.services.platform.pagination import Page, keyset_by_id


def list_job_runs(*, size: int = 50, after: str | None = None, before: str | None = None) -> Page:
    """Return one page of top-level job runs, newest first."""
    j = JobRun.__table__.c
    stmt = select(j.id, j.kind, j.as_of, j.dry_run, j.status, j.started_at, j.finished_at, j.total_chunks,
                  j.done_chunks, j.counts, j.error, j.triggered_by).where(j.parent_id.is_(None))
    return keyset_by_id(stmt, j.id, size, after, before)


def job_run_detail(job_run_id: int) -> tuple[JobRun, list[JobRun]]:
    """Return a job run and the runs it started (its steps or chunks, at most 500)."""
    run = db.session.get(JobRun, job_run_id)
    if run is None:
        raise NotFound("No such job run.")
    children = list(db.session.scalars(select(JobRun).where(JobRun.parent_id == run.id)
                                       .order_by(JobRun.id).limit(500)))
    return run, children


def list_notifications(*, status: str | None = None, size: int = 50, after: str | None = None,
                       before: str | None = None) -> Page:
    """Return one page of outbox rows (newest first), optionally of one status."""
    n, c, i = Notification.__table__.c, Customer.__table__.c, Invoice.__table__.c
    stmt = (select(n.id, n.kind, n.status, n.recipient, n.subject, n.attempts, n.last_error, n.sent_at,
                   n.created_at, n.customer_id, n.invoice_id, c.name.label("customer_name"),
                   i.number.label("invoice_number"))
            .join(Customer.__table__, c.id == n.customer_id).outerjoin(Invoice.__table__, i.id == n.invoice_id))
    if status:
        stmt = stmt.where(n.status == status)
    return keyset_by_id(stmt, n.id, size, after, before)

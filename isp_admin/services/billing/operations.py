"""Read-side queries for the billing operations pages: the run's dry run, job runs, the outbox."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import select

from isp_admin.errors import NotFound
from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, JobRun, Notification
from isp_admin.services.billing import collections
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.queries import keyset_by_id
from isp_admin.services.platform.pagination import Page

PREVIEW_ROWS = 200
# The nightly run's collection steps, in the order it runs them.
COLLECTION_STEPS = (
    ("mark_overdue", "Marked overdue", collections.plan_mark_overdue),
    ("suspend", "Suspended for non-payment", collections.plan_enforce_overdue),
    ("reactivate", "Reactivated (paid up)", collections.plan_reactivate_paid),
    ("remind", "Reminded", collections.plan_reminders),
)


@dataclass
class StepPreview:
    """One step of the dry run: the first rows, and the full count and amount."""

    key: str
    title: str
    rows: list
    count: int
    total_cents: int

    @property
    def truncated(self) -> bool:
        """Whether more rows exist than are shown."""
        return self.count > len(self.rows)


@dataclass
class RunPreview:
    """What the nightly run would do for a date, step by step (nothing is written)."""

    as_of: date
    invoices: StepPreview
    line_count: int
    subtotal_cents: int
    tax_cents: int
    steps: list[StepPreview]


def preview_run(as_of: date, limit: int = PREVIEW_ROWS) -> RunPreview:
    """Dry-run every step of the nightly run for `as_of` with the same plan_* functions the run uses."""
    from isp_admin.services.platform.bounds import check_service_dates
    from isp_admin.services.platform.clock import today

    check_service_dates(today(), as_of=as_of)
    plan = billing.plan_invoices(as_of)
    invoices = StepPreview("invoice", "Invoiced", plan.invoices[:limit], len(plan.invoices), plan.total_cents)
    steps = []
    for key, title, planner in COLLECTION_STEPS:
        affected = planner(as_of)
        steps.append(StepPreview(key, title, affected[:limit], len(affected),
                                 sum(a.amount_cents for a in affected)))
    return RunPreview(as_of, invoices, sum(len(i.lines) for i in plan.invoices),
                      sum(i.subtotal_cents for i in plan.invoices), sum(i.tax_cents for i in plan.invoices), steps)


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

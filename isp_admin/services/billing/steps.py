"""The nightly run's steps, in order: the one table the scheduler, the workers, the CLI, the run page and the API read.

Each step says what it is called, how it previews (who would be affected, nothing written), how it runs, and,
for the two that fan out over id ranges, how it chunks. Every rule about a run lives here too — which dates a
run or a preview may name, which missed days a late run replays — so the edges cannot disagree about them.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta

from flask import current_app
from sqlalchemy import func, select

from isp_admin.errors import Invalid
from isp_admin.extensions import db
from isp_admin.models import Invoice, JobRun
from isp_admin.models.invoices import OPEN_STATUSES
from isp_admin.services.billing import collections
from isp_admin.services.billing import run as billing
from isp_admin.services.messaging import delivery
from isp_admin.services.platform import bounds, job_runs
from isp_admin.services.platform.clock import today

log = logging.getLogger(__name__)
NIGHTLY = "nightly"
PREVIEW_ROWS = 200
DELIVERY_CHUNK_SIZE = 200


@dataclass
class StepPreview:
    """One step of a dry run: the first rows, the full count and amount, and any totals of its own."""

    kind: str
    key: str
    title: str
    day: date
    rows: list
    count: int
    total_cents: int
    totals: dict = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        """Whether more rows exist than are shown."""
        return self.count > len(self.rows)


@dataclass(frozen=True)
class Step:
    """One step of the nightly run: its name, its preview, and either its run or its chunker and chunk run."""

    kind: str
    key: str  # the page's element ids
    title: str
    plan: Callable[[date], tuple[list, int, dict]]  # (every affected row, their amount, any totals of the step's)
    run: Callable[[date], dict] | None = None
    chunks: Callable[[date], list[tuple[int, int]]] | None = None
    run_chunk: Callable[[date, int, int, int | None, Callable[[], None]], dict] | None = None
    daily: bool = True  # replayed for each missed day; False: once per chain, for the run's own date

    @property
    def fanned_out(self) -> bool:
        """Whether the step works through id ranges, one chunk (and one transaction) each."""
        return self.chunks is not None

    @property
    def command(self) -> str:
        """The step's `flask billing` command."""
        return self.kind.replace("_", "-")

    def preview(self, as_of: date, limit: int | None) -> StepPreview:
        """What the step would do on `as_of` (nothing written): its first `limit` rows, count and amount."""
        rows, total_cents, totals = self.plan(as_of)
        return StepPreview(self.kind, self.key, self.title, as_of, rows[:limit], len(rows), total_cents, totals)


# --- previews --------------------------------------------------------------------------------------------------

def _plan_invoices(as_of: date) -> tuple[list, int, dict]:
    plan = billing.plan_invoices(as_of)
    totals = {"lines": sum(len(i.lines) for i in plan.invoices),
              "subtotal_cents": sum(i.subtotal_cents for i in plan.invoices),
              "tax_cents": sum(i.tax_cents for i in plan.invoices)}
    return plan.invoices, plan.total_cents, totals


def _overdue_by_customer(customer_ids: set[int], as_of: date) -> dict[int, int]:
    """What each customer owes past due on `as_of`, in one grouped query."""
    if not customer_ids:
        return {}
    rows = db.session.execute(
        select(Invoice.customer_id, func.sum(Invoice.balance_cents))
        .where(Invoice.customer_id.in_(customer_ids), Invoice.status.in_(OPEN_STATUSES),
               Invoice.due_date < as_of).group_by(Invoice.customer_id)).all()
    return {customer_id: int(owed or 0) for customer_id, owed in rows}


def _collection_plan(planner, *, owed: bool = False) -> Callable[[date], tuple[list, int, dict]]:
    def plan(as_of: date) -> tuple[list, int, dict]:
        affected = planner(as_of)
        if owed:  # a suspension's amount is what its customer owes past due
            by_customer = _overdue_by_customer({a.customer_id for a in affected}, as_of)
            for a in affected:
                a.amount_cents = by_customer.get(a.customer_id, 0)
        return affected, sum(a.amount_cents for a in affected), {}

    return plan


def _plan_delivery(as_of: date) -> tuple[list, int, dict]:
    return delivery.queued_ids(), 0, {}  # the outbox's ids: only ever counted


# --- runs ------------------------------------------------------------------------------------------------------

def _reactivate_paid(as_of: date) -> dict:
    # Per customer: one whose reactivation fails is left out and reported on the run, the rest go on.
    failures: list[dict] = []
    reactivated = collections.run_reactivate_paid(as_of, failures)
    return {"reactivated": reactivated, **job_runs.failure_counts(failures)}


def _billing_chunks(as_of: date) -> list[tuple[int, int]]:
    return billing.chunk_ranges(billing.customers_due(as_of), current_app.config["BILLING_CHUNK_SIZE"])


def _bill_chunk(as_of: date, first: int, last: int, job_run_id: int | None, commit) -> dict:
    return billing.bill_customer_range(as_of, (first, last), job_run_id)


def _delivery_chunks(as_of: date) -> list[tuple[int, int]]:
    return billing.chunk_ranges(delivery.queued_ids(), DELIVERY_CHUNK_SIZE)


def _deliver_chunk(as_of: date, first: int, last: int, job_run_id: int | None, commit) -> dict:
    # Each email is committed as it leaves: a sent email cannot be rolled back with its batch.
    return delivery.deliver_many(delivery.queued_ids(first, last), commit)


STEPS: tuple[Step, ...] = (
    Step("generate_monthly_invoices", "invoice", "Invoiced", _plan_invoices,
         chunks=_billing_chunks, run_chunk=_bill_chunk),
    Step("mark_overdue", "mark_overdue", "Marked overdue", _collection_plan(collections.plan_mark_overdue),
         run=lambda d: {"marked_overdue": collections.run_mark_overdue(d)}),
    Step("enforce_overdue", "suspend", "Suspended for non-payment",
         _collection_plan(collections.plan_enforce_overdue, owed=True),
         run=lambda d: {"suspended": collections.run_enforce_overdue(d)}),
    Step("reactivate_paid", "reactivate", "Reactivated (paid up)", _collection_plan(collections.plan_reactivate_paid),
         run=_reactivate_paid),
    Step("send_reminders", "remind", "Reminded", _collection_plan(collections.plan_reminders),
         run=lambda d: {"reminders_queued": collections.run_send_reminders(d)}),
    Step("deliver_notifications", "deliver", "Emails sent", _plan_delivery,
         chunks=_delivery_chunks, run_chunk=_deliver_chunk, daily=False),
)
BY_KIND: dict[str, Step] = {step.kind: step for step in STEPS}
KINDS: tuple[str, ...] = (NIGHTLY, *BY_KIND)
NIGHTLY_STEPS: tuple[str, ...] = tuple(BY_KIND)
DAILY_STEPS: tuple[str, ...] = tuple(step.kind for step in STEPS if step.daily)
ONCE_STEPS: tuple[str, ...] = tuple(step.kind for step in STEPS if not step.daily)


def step(kind: str) -> Step:
    """Return the step called `kind`, or raise Invalid naming the ones there are."""
    try:
        return BY_KIND[kind]
    except KeyError:
        raise Invalid("Unknown kind of run.", {"kind": f"Choose one of: {', '.join(KINDS)}."}) from None


# --- the rules every edge shares ---------------------------------------------------------------------------------

def check_run_date(as_of: date, *, dry_run: bool) -> None:
    """A real run is for today or earlier (a future run would mark invoices overdue early); a preview may look
    ahead to the service horizon. Both start at EARLIEST_DATE."""
    if dry_run:
        bounds.check_service_dates(today(), as_of=as_of)
    else:
        bounds.check_dates(today(), future=False, as_of=as_of,
                           message="A run cannot be started for a future date; preview it instead.")


def check_kind(kind: str) -> None:
    """Refuse a kind of run that is neither the nightly chain nor one of its steps."""
    if kind != NIGHTLY:
        step(kind)


def nightly_days(as_of: date, exclude_run_id: int | None = None) -> tuple[list[date], int]:
    """Return the days a nightly run for `as_of` replays, oldest first, and how many older missed days it skips.

    A late run (after a scheduler outage) does what the on-time runs would have done (DESIGN §3): each day since
    the last nightly run that succeeded, in order, at most NIGHTLY_CATCH_UP_DAYS of them.
    """
    last = db.session.scalar(select(func.max(JobRun.as_of)).where(
        JobRun.kind == NIGHTLY, JobRun.status == "succeeded", JobRun.dry_run.is_(False),
        JobRun.parent_id.is_(None), JobRun.id != (exclude_run_id or 0)))
    if last is None or last >= as_of:  # a first run, or a manual re-run for an earlier date: that day alone
        return [as_of], 0
    first, skipped = last + timedelta(days=1), 0
    limit = current_app.config["NIGHTLY_CATCH_UP_DAYS"]
    if (as_of - first).days > limit:
        skipped = (as_of - timedelta(days=limit) - first).days
        first = as_of - timedelta(days=limit)
    return [first + timedelta(days=n) for n in range((as_of - first).days + 1)], skipped


def nightly_plan(as_of: date, exclude_run_id: int | None = None) -> tuple[list[tuple[str, date]], int]:
    """Return the (step, date) pairs a nightly run for `as_of` works through, and the missed days it skips."""
    days, skipped = nightly_days(as_of, exclude_run_id)
    plan = [(kind, day) for day in days for kind in DAILY_STEPS] + [(kind, as_of) for kind in ONCE_STEPS]
    return plan, skipped


def step_entry(kind: str, day: date) -> str:
    """A step of a queued chain as the jobs pass it along: "kind@YYYY-MM-DD"."""
    return f"{kind}@{day.isoformat()}"


def parse_step(entry: str, default: date) -> tuple[str, date]:
    """A chain entry: "kind@YYYY-MM-DD", or a bare kind (queued before steps carried dates: the step before's)."""
    kind, _, day = entry.partition("@")
    return kind, date.fromisoformat(day) if day else default


# --- the dry run -------------------------------------------------------------------------------------------------

def preview(kind: str, as_of: date, limit: int | None = PREVIEW_ROWS) -> list[StepPreview]:
    """What a run of `kind` for `as_of` would do, step by step; the caller rolls back whatever it touched.

    A lone step is planned from the data as it stands and takes no locks. The nightly chain plans each step on
    the ones before it, as the real run would meet them (a step's effect is applied in the open transaction,
    which the caller rolls back): so the reminders see tonight's invoices, and a late run's replayed days each
    see the day before.
    """
    check_kind(kind)
    check_run_date(as_of, dry_run=True)
    if kind != NIGHTLY:
        return [BY_KIND[kind].preview(as_of, limit)]
    previews, applying = [], True
    for name, day in nightly_plan(as_of)[0]:
        entry = BY_KIND[name]
        previews.append(entry.preview(day, limit))
        if entry.daily and applying:  # delivery comes last and sends real email: it is only ever counted
            applying = _apply_for_preview(entry, day)
    return previews


@dataclass
class StepTotal:
    """One kind of step over a whole dry run (a late run previews it once per replayed day)."""

    kind: str
    key: str
    title: str
    count: int = 0
    total_cents: int = 0
    lines: int = 0


def summarize(previews: list[StepPreview]) -> list[StepTotal]:
    """Add a dry run's steps up per kind, in the run's order (the run page's summary cards)."""
    totals: dict[str, StepTotal] = {}
    for p in previews:
        total = totals.setdefault(p.kind, StepTotal(p.kind, p.key, p.title))
        total.count += p.count
        total.total_cents += p.total_cents
        total.lines += p.totals.get("lines", 0)
    return list(totals.values())


def _apply_for_preview(entry: Step, day: date) -> bool:
    """Apply a step in a savepoint so the next one sees it; False when it could not be (nothing of it is kept).

    A real run may commit the same rows between this preview's plan and its write (the unique line key then
    refuses the copy): the preview must not fail for that, so the steps after it are planned on the data as it
    stands instead.
    """
    try:
        if entry.kind == "generate_monthly_invoices":
            billing.in_savepoint(lambda: billing.write_invoices(billing.plan_invoices(day), day))
        else:
            billing.in_savepoint(lambda: entry.run(day))
    except Exception as exc:
        if job_runs.is_transient(exc):
            raise
        log.warning("dry run for %s: %s could not be applied for the next steps: %s", day, entry.kind, exc)
        return False
    return True

"""The dashboard's figures: what is owed and how late, what came in today and this month, MRR and its trend,
customers and plans; and the state of operations (the last nightly run, failed emails, CoA failures, network
mismatches).

Money figures are a fixed handful of set-based aggregates, cached under the reports' generation token: every write
that invalidates a report (an invoice issued or voided, a payment recorded or reversed, a run, a credit) makes them
stale at once. The MRR trend reads a year of invoice lines (seconds at 100,000 customers), so it is cached apart,
under a fingerprint of the invoices that changes exactly when an invoice is issued or voided: the day's payments
do not recompute it. Operational figures are one indexed row or count each, read live: they change in workers that
know nothing of this cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, case, extract, func, select

from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, InvoiceLine, JobRun, Notification, Payment, Plan, Subscription
from isp_admin.services.platform.job_runs import failed_count
from isp_admin.services.platform.single_flight import cached_once
from isp_admin.services.reporting.reports import (
    BUCKETS,
    ISSUED,
    _bucket_conditions,
    _cached,
    _open_on,
    add_months,
    invalidate_reports,
)

TREND_MONTHS = 12
# The trend's key changes whenever it could (an invoice issued or voided); the timeout only bounds what is kept.
TREND_TIMEOUT = 24 * 3600


@dataclass(frozen=True)
class Bucket:
    """Open balances by days past due: a range of days (None: unbounded), how much and on how many invoices."""

    key: str
    label: str
    oldest: int | None
    newest: int | None
    cents: int
    invoices: int

    @property
    def days(self) -> str | None:
        """The range as the invoice list's `overdue_days` filter spells it ("1-30", "91-"); None for current."""
        if self.oldest is None:
            return None
        return f"{self.oldest}-{'' if self.newest is None else self.newest}"


@dataclass(frozen=True)
class Collected:
    """Completed payments received from `start` to `end` (both included); reversed ones never count."""

    start: date
    end: date
    cents: int
    payments: int


@dataclass(frozen=True)
class TrendMonth:
    """Recurring charges billed for periods starting in a month; the current month is `partial` (still billing)."""

    month: date
    cents: int
    partial: bool


@dataclass(frozen=True)
class Figures:
    """Everything about money the dashboard shows, as of one day."""

    as_of: date
    buckets: tuple[Bucket, ...]
    debtors: int
    collected_today: Collected
    collected_month: Collected
    customers_by_status: dict[str, int]
    non_payment_customers: int
    plans: list[dict]

    @property
    def receivable_cents(self) -> int:
        """Everything owed on issued invoices."""
        return sum(b.cents for b in self.buckets)

    @property
    def receivable_invoices(self) -> int:
        """How many invoices owe something."""
        return sum(b.invoices for b in self.buckets)

    @property
    def overdue_cents(self) -> int:
        """Owed on invoices past their due date (DESIGN §3: overdue when today > due date)."""
        return sum(b.cents for b in self.buckets if b.oldest is not None)

    @property
    def overdue_invoices(self) -> int:
        """How many invoices are past their due date and owe something."""
        return sum(b.invoices for b in self.buckets if b.oldest is not None)

    @property
    def mrr_cents(self) -> int:
        """Monthly recurring revenue of active subscriptions (prices excluding tax; overrides count)."""
        return sum(p["mrr"] for p in self.plans)

    @property
    def active_subscriptions(self) -> int:
        """How many subscriptions are active."""
        return sum(p["active"] for p in self.plans)


def dashboard_figures(as_of: date) -> Figures:
    """Return the money figures as of `as_of` (cached until a billing write or for a minute)."""
    return _cached("dashboard", (as_of.isoformat(),), lambda: _figures(as_of))


def invalidate_dashboard() -> None:
    """Forget the cached dashboard and the reports built on the same figures; every write calls this."""
    invalidate_reports()  # the dashboard is cached under the reports' generation: one new token forgets both


def _figures(as_of: date) -> Figures:
    buckets, debtors = _receivables(as_of)
    today, month = _collections(as_of)
    by_status, non_payment = _customers()
    return Figures(as_of=as_of, buckets=buckets, debtors=debtors, collected_today=today, collected_month=month,
                   customers_by_status=by_status, non_payment_customers=non_payment, plans=_plans())


def _receivables(as_of: date) -> tuple[tuple[Bucket, ...], int]:
    conditions = _bucket_conditions(as_of)
    row = db.session.execute(
        select(*[func.coalesce(func.sum(Invoice.balance_cents).filter(c), 0) for c in conditions],
               *[func.count().filter(c) for c in conditions], func.count(Invoice.customer_id.distinct()))
        .where(*_open_on(as_of))).one()
    width = len(BUCKETS)
    buckets = tuple(Bucket(key, label, oldest, newest, int(row[i]), int(row[width + i]))
                    for i, (key, label, oldest, newest) in enumerate(BUCKETS))
    return buckets, int(row[-1])


def _collections(as_of: date) -> tuple[Collected, Collected]:
    """Today's and this month's completed payments, in one statement over the received_on index."""
    month = as_of.replace(day=1)
    on_the_day = Payment.received_on == as_of
    row = db.session.execute(
        select(func.coalesce(func.sum(Payment.amount_cents).filter(on_the_day), 0), func.count().filter(on_the_day),
               func.coalesce(func.sum(Payment.amount_cents), 0), func.count())
        .where(Payment.status == "completed", Payment.received_on >= month, Payment.received_on <= as_of)).one()
    return (Collected(as_of, as_of, int(row[0]), int(row[1])), Collected(month, as_of, int(row[2]), int(row[3])))


def mrr_trend(as_of: date) -> tuple[TrendMonth, ...]:
    """Return subscription charges billed per month for the TREND_MONTHS up to `as_of`'s (cached until invoices
    are issued or voided)."""
    # Read before the lines: a trend computed from a newer state than its key is only ever fresher than the key.
    key = ":".join(["dashboard", "trend", as_of.replace(day=1).isoformat(), *map(str, _invoices_fingerprint())])
    return cached_once(key, lambda: _trend(as_of), TREND_TIMEOUT)  # seconds of work: once, not once per request


def _invoices_fingerprint() -> tuple:
    """Values that change whenever the set of issued, not void, invoices does (one cheap statement).

    An invoice joins the set when it is created issued (the highest id grows) or a draft is issued (the drafts
    count falls, unless a new draft came too, which grows the highest id); it leaves only by a void (the voids
    count grows). Its lines never change once issued. Paid, open or overdue makes no difference to the trend.
    """
    def counted(status: str):  # over the (status, due_date) index: voids and drafts are few
        return select(func.count()).select_from(Invoice).where(Invoice.status == status).scalar_subquery()

    return tuple(db.session.execute(select(select(func.max(Invoice.id)).scalar_subquery(), counted("void"),
                                           counted("draft"))).one())


def _trend(as_of: date) -> tuple[TrendMonth, ...]:
    """Subscription charges (excl. tax) on issued, not void, invoices, by the month their period starts."""
    this_month = as_of.replace(day=1)
    start = add_months(this_month, 1 - TREND_MONTHS)
    year, month = extract("year", InvoiceLine.period_start), extract("month", InvoiceLine.period_start)
    rows = db.session.execute(
        select(year, month, func.sum(InvoiceLine.amount_cents))
        .join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(InvoiceLine.kind == "subscription", Invoice.status.in_(ISSUED),
               InvoiceLine.period_start >= start, InvoiceLine.period_start < add_months(this_month, 1))
        .group_by(year, month)).all()
    billed = {(int(y), int(m)): int(total) for y, m, total in rows}
    months = [add_months(start, i) for i in range(TREND_MONTHS)]
    return tuple(TrendMonth(m, billed.get((m.year, m.month), 0), m == this_month) for m in months)


def _customers() -> tuple[dict[str, int], int]:
    """Customers by status, and how many are suspended with a subscription suspended for non-payment."""
    for_non_payment = Customer.id.in_(select(Subscription.customer_id).where(
        Subscription.status == "suspended", Subscription.suspension_reason == "non_payment"))
    rows = db.session.execute(
        select(Customer.status, func.count(), func.count().filter(and_(Customer.status == "suspended",
                                                                       for_non_payment)))
        .group_by(Customer.status)).all()
    by_status = {status: int(count) for status, count, _ in rows}
    return ({s: by_status.get(s, 0) for s in ("active", "suspended", "closed")},
            sum(int(non_payment) for _, _, non_payment in rows))


def _plans() -> list[dict]:
    price = func.coalesce(Subscription.price_override_cents, Plan.monthly_price_cents)
    rows = db.session.execute(
        # The plan's own flag gets its own name: labelled "active" it would collide with the count below.
        select(Plan.id, Plan.name, Plan.code, Plan.active.label("is_active"),
               func.count(Subscription.id).label("active"),
               func.coalesce(func.sum(case((Subscription.id.isnot(None), price), else_=0)), 0).label("mrr"))
        .outerjoin(Subscription, (Subscription.plan_id == Plan.id) & (Subscription.status == "active"))
        .group_by(Plan.id, Plan.name, Plan.code, Plan.active)
        .order_by(func.count(Subscription.id).desc(), Plan.name)
    ).mappings()
    return [{**row, "active": int(row["active"]), "mrr": int(row["mrr"])} for row in rows]


# --- operations, read live --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LastRun:
    """The latest nightly run: which, for what day, how it ended (or that it is running), and who it left out."""

    run_id: int
    as_of: date
    status: str
    started_at: datetime
    finished_at: datetime | None
    failed_customers: int


@dataclass(frozen=True)
class Operations:
    """What needs someone: the last nightly run, failed emails, failed CoA packets, network mismatches."""

    last_nightly: LastRun | None
    failed_notifications: int
    coa_failed: int
    coa_pending: int
    mismatches: int | None  # at the last nightly check; None before the first
    mismatches_checked_at: datetime | None


def operations() -> Operations:
    """Return the operational figures (four indexed reads, not cached: workers change them without telling)."""
    # Named interfaces of the network and billing domains (setup.cfg); imported here, as those domains import this
    # module (every write calls invalidate_dashboard).
    from isp_admin.services.billing.steps import NIGHTLY
    from isp_admin.services.network import coa, reconcile

    run = db.session.scalar(select(JobRun).where(JobRun.kind == NIGHTLY, JobRun.parent_id.is_(None),
                                                 JobRun.dry_run.is_(False))
                            .order_by(JobRun.started_at.desc(), JobRun.id.desc()).limit(1))
    last = None if run is None else LastRun(run.id, run.as_of, run.status, run.started_at, run.finished_at,
                                            failed_count(run))
    failed = db.session.scalar(select(func.count()).select_from(Notification).where(Notification.status == "failed"))
    requests = coa.counts_by_status()
    check = reconcile.last_check()
    mismatches = None if check is None else sum(int((check.counts or {}).get(k, 0)) for k in reconcile.KINDS)
    return Operations(last, int(failed), requests["failed"], requests["pending"], mismatches,
                      None if check is None else check.finished_at)


@dataclass
class RunFailures:
    """The latest finished run, when it left customers out: its id, kind, date and how many customers."""

    run_id: int
    kind: str
    as_of: object
    failed_customers: int


def last_run_failures() -> RunFailures | None:
    """Return the latest finished billing run if it left customers out, else None (never cached: one row)."""
    from isp_admin.services.billing.steps import DAILY_STEPS, NIGHTLY

    # Runs that bill, collect or suspend customers. The delivery the scheduler records every quarter hour while
    # mail is queued, and the network check, leave no customer out: counted, they hid a run's failures within
    # minutes of it.
    run = db.session.scalar(select(JobRun).where(JobRun.parent_id.is_(None), JobRun.dry_run.is_(False),
                                                 JobRun.status != "running", JobRun.kind.in_((NIGHTLY, *DAILY_STEPS)))
                            .order_by(JobRun.id.desc()).limit(1))
    if run is None or not failed_count(run):
        return None
    return RunFailures(run.id, run.kind, run.as_of, failed_count(run))

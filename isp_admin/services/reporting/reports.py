"""Reports: AR aging, invoiced vs collected by month, MRR by plan, top debtors.

Every figure is a set-based aggregate (GROUP BY in the database, a fixed number of queries whatever the data
size). Results are cached for a minute under keys that carry their parameters and a generation token;
invalidate_reports() replaces the token, so billing writes make every cached report stale at once.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import and_, extract, func, select

from isp_admin.errors import Invalid
from isp_admin.extensions import cache, db
from isp_admin.models import Customer, Invoice, Payment, Plan, Subscription
from isp_admin.models.invoices import OPEN_STATUSES
from isp_admin.services.platform.after_commit import forget_now_and_after_commit
from isp_admin.services.platform.single_flight import cached_once

CACHE_TIMEOUT = 60
GENERATION_KEY = "reports:generation"
ISSUED = (*OPEN_STATUSES, "paid")
MAX_MONTHS = 36
AGING_CUSTOMERS = 100  # on the page; the CSV has every customer
AGING_BATCH = 500  # rows fetched at a time while the CSV streams
TOP_DEBTORS = 50
# Days past due = as_of - due_date. Due today is not overdue yet (DESIGN §3: overdue when today > due_date),
# so it counts as current; (key, label, oldest, newest) days past due, None meaning unbounded.
BUCKETS = (
    ("current", "Current", None, 0),
    ("days_1_30", "1–30 days", 1, 30),
    ("days_31_60", "31–60 days", 31, 60),
    ("days_61_90", "61–90 days", 61, 90),
    ("days_over_90", "Over 90 days", 91, None),
)


def _cached(name: str, params: tuple, compute: Callable[[], object]):
    """Return a cached report, computing and storing it (for CACHE_TIMEOUT seconds) on a miss, once per process
    however many requests miss together."""
    generation = cache.get(GENERATION_KEY) or "0"
    key = ":".join(["reports", name, generation, *map(str, params)])
    return cached_once(key, compute, CACHE_TIMEOUT)


def invalidate_reports() -> None:
    """Forget every cached report; invoice, payment, reversal and void writes call this."""
    # A fresh random token in every key orphans all cached reports at once on any cache backend (no key scans);
    # it never expires, so an old token (and its stale entries) can never come back.
    forget_now_and_after_commit(_new_generation)


def _new_generation() -> None:
    cache.set(GENERATION_KEY, secrets.token_hex(8), timeout=0)


# --- AR aging -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AgingRow:
    """One customer's open balance split by bucket (amounts in BUCKETS order)."""

    customer_id: int
    account_number: str
    name: str
    amounts: tuple[int, ...]
    total_cents: int


@dataclass(frozen=True)
class AgingReport:
    """Open balances as of a date: totals and invoice counts per bucket, and the customers owing most."""

    as_of: date
    totals: tuple[int, ...]
    counts: tuple[int, ...]
    total_cents: int
    customer_count: int
    customers: list[AgingRow]


def _bucket_conditions(as_of: date) -> list:
    """SQL conditions on due_date, one per bucket: compared with dates, so the index on due_date serves them."""
    conditions = []
    for _key, _label, oldest, newest in BUCKETS:
        parts = []
        if newest is not None:
            parts.append(Invoice.due_date >= as_of - timedelta(days=newest))
        if oldest is not None:
            parts.append(Invoice.due_date <= as_of - timedelta(days=oldest))
        conditions.append(and_(*parts))
    return conditions


def _open_on(as_of: date) -> tuple:
    """Invoices owing money that were issued by `as_of`."""
    return (Invoice.is_open, Invoice.issue_date <= as_of, Invoice.balance_cents > 0)


def ar_aging(as_of: date) -> AgingReport:
    """Return the AR aging report as of `as_of` (cached)."""
    return _cached("aging", (as_of.isoformat(),), lambda: _ar_aging(as_of))


def _ar_aging(as_of: date) -> AgingReport:
    conditions = _bucket_conditions(as_of)
    sums = [func.coalesce(func.sum(Invoice.balance_cents).filter(c), 0) for c in conditions]
    summary = db.session.execute(
        select(*sums, *[func.count().filter(c) for c in conditions], func.count(Invoice.customer_id.distinct()))
        .where(*_open_on(as_of))).one()
    width = len(BUCKETS)
    totals = tuple(int(v) for v in summary[:width])
    return AgingReport(
        as_of=as_of, totals=totals, counts=tuple(int(v) for v in summary[width:2 * width]),
        total_cents=sum(totals), customer_count=int(summary[-1]),
        customers=[_aging_row(r) for r in db.session.execute(_per_customer(as_of, AGING_CUSTOMERS)).mappings()])


def aging_rows(as_of: date) -> Iterator[AgingRow]:
    """Yield every customer's open balance as of `as_of`, owing most first, in batches (the CSV; not cached)."""
    result = db.session.execute(_per_customer(as_of).execution_options(yield_per=AGING_BATCH)).mappings()
    for row in result:
        yield _aging_row(row)


def _per_customer(as_of: date, limit: int | None = None):
    """Each customer's open balance by bucket and in total, owing most first (the `limit` largest, or all)."""
    sums = [func.coalesce(func.sum(Invoice.balance_cents).filter(c), 0).label(f"b{i}")
            for i, c in enumerate(_bucket_conditions(as_of))]
    per_customer = (
        select(Invoice.customer_id, *sums, func.sum(Invoice.balance_cents).label("total"))
        .where(*_open_on(as_of)).group_by(Invoice.customer_id)
        .order_by(func.sum(Invoice.balance_cents).desc(), Invoice.customer_id).limit(limit).subquery())
    return (select(per_customer, Customer.account_number, Customer.name)
            .join(Customer, Customer.id == per_customer.c.customer_id)
            .order_by(per_customer.c.total.desc(), per_customer.c.customer_id))


def _aging_row(row) -> AgingRow:
    return AgingRow(row["customer_id"], row["account_number"], row["name"],
                    tuple(int(row[f"b{i}"]) for i in range(len(BUCKETS))), int(row["total"]))


# --- Invoiced vs collected ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MonthFigures:
    """What was invoiced (issued, not void, by issue date) and collected (completed payments) in one month."""

    month: date
    invoiced_cents: int
    collected_cents: int

    @property
    def difference_cents(self) -> int:
        """Invoiced minus collected."""
        return self.invoiced_cents - self.collected_cents


@dataclass(frozen=True)
class InvoicedCollectedReport:
    """One row per month from `start` to `end` (first days of months), months with nothing at zero."""

    start: date
    end: date
    months: list[MonthFigures]

    @property
    def invoiced_cents(self) -> int:
        """Invoiced over the range."""
        return sum(m.invoiced_cents for m in self.months)

    @property
    def collected_cents(self) -> int:
        """Collected over the range."""
        return sum(m.collected_cents for m in self.months)


def add_months(month: date, count: int) -> date:
    """Return the first day of the month `count` months after `month`'s (count may be negative)."""
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def months_spanned(start: date, end: date) -> int:
    """Return how many months [start's month, end's month] covers, both ends included."""
    return (end.year - start.year) * 12 + end.month - start.month + 1


def month_range(start: date | None, end: date | None, today: date) -> tuple[date, date]:
    """Resolve a chosen range to first-of-month dates: 12 months up to this month by default, at most 36."""
    if end is None:
        end = add_months(start, 11) if start is not None else today.replace(day=1)
    end = end.replace(day=1)
    start = (start or add_months(end, -11)).replace(day=1)
    if start > end:
        raise Invalid("The range ends before it starts.", {"end": "Pick a month on or after the first."})
    if months_spanned(start, end) > MAX_MONTHS:
        raise Invalid(f"A range covers at most {MAX_MONTHS} months.", {"start": f"At most {MAX_MONTHS} months."})
    return start, end


def invoiced_vs_collected(start: date, end: date) -> InvoicedCollectedReport:
    """Return invoiced and collected amounts per month from `start` to `end` (months, cached)."""
    return _cached("cashflow", (start.isoformat(), end.isoformat()), lambda: _invoiced_vs_collected(start, end))


def _monthly(amount, day_column, *conditions, start: date, stop: date) -> dict[tuple[int, int], int]:
    year, month = extract("year", day_column), extract("month", day_column)
    rows = db.session.execute(
        select(year, month, func.sum(amount))
        .where(*conditions, day_column >= start, day_column < stop).group_by(year, month)).all()
    return {(int(y), int(m)): int(total) for y, m, total in rows}


def _invoiced_vs_collected(start: date, end: date) -> InvoicedCollectedReport:
    stop = add_months(end, 1)
    invoiced = _monthly(Invoice.total_cents, Invoice.issue_date, Invoice.status.in_(ISSUED), start=start, stop=stop)
    collected = _monthly(Payment.amount_cents, Payment.received_on, Payment.status == "completed",
                         start=start, stop=stop)
    months = [add_months(start, i) for i in range(months_spanned(start, end))]
    return InvoicedCollectedReport(start, end, [
        MonthFigures(m, invoiced.get((m.year, m.month), 0), collected.get((m.year, m.month), 0)) for m in months])


# --- MRR by plan ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanRevenue:
    """One plan's active subscriptions and the monthly revenue they bring (prices excluding tax)."""

    plan_id: int
    code: str
    name: str
    subscriptions: int
    mrr_cents: int


@dataclass(frozen=True)
class MrrReport:
    """Monthly recurring revenue of active subscriptions, per plan, largest first."""

    plans: list[PlanRevenue]

    @property
    def mrr_cents(self) -> int:
        """MRR over all plans."""
        return sum(p.mrr_cents for p in self.plans)

    @property
    def subscriptions(self) -> int:
        """Active subscriptions over all plans."""
        return sum(p.subscriptions for p in self.plans)


def mrr_by_plan() -> MrrReport:
    """Return MRR per plan over active subscriptions (cached)."""
    return _cached("mrr", (), _mrr_by_plan)


def _mrr_by_plan() -> MrrReport:
    mrr = func.sum(func.coalesce(Subscription.price_override_cents, Plan.monthly_price_cents))
    rows = db.session.execute(
        select(Plan.id, Plan.code, Plan.name, func.count(Subscription.id), mrr)
        .join(Subscription, Subscription.plan_id == Plan.id).where(Subscription.status == "active")
        .group_by(Plan.id, Plan.code, Plan.name).order_by(mrr.desc(), Plan.name, Plan.id)).all()
    return MrrReport([PlanRevenue(pid, code, name, int(count), int(total)) for pid, code, name, count, total in rows])


# --- Top debtors ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Debtor:
    """A customer with money overdue: how much, since when, and everything it owes."""

    customer_id: int
    account_number: str
    name: str
    status: str
    overdue_cents: int
    owed_cents: int
    overdue_invoices: int
    oldest_due: date
    days_overdue: int


@dataclass(frozen=True)
class DebtorsReport:
    """The customers with the largest overdue balances as of a date."""

    as_of: date
    debtors: list[Debtor]


def top_debtors(as_of: date) -> DebtorsReport:
    """Return the TOP_DEBTORS customers with the largest overdue balance as of `as_of` (cached)."""
    return _cached("debtors", (as_of.isoformat(),), lambda: _top_debtors(as_of))


def _top_debtors(as_of: date) -> DebtorsReport:
    overdue = Invoice.due_date < as_of
    overdue_sum = func.sum(Invoice.balance_cents).filter(overdue)
    rows = db.session.execute(
        select(Customer.id, Customer.account_number, Customer.name, Customer.status, overdue_sum,
               func.sum(Invoice.balance_cents), func.count().filter(overdue),
               func.min(Invoice.due_date).filter(overdue))
        .join(Invoice, Invoice.customer_id == Customer.id).where(*_open_on(as_of))
        .group_by(Customer.id, Customer.account_number, Customer.name, Customer.status)
        .having(overdue_sum > 0).order_by(overdue_sum.desc(), Customer.id).limit(TOP_DEBTORS)).all()
    return DebtorsReport(as_of, [
        Debtor(cid, account, name, status, int(late), int(owed), int(count), oldest, (as_of - oldest).days)
        for cid, account, name, status, late, owed, count, oldest in rows])

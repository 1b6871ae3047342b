"""The monthly run: bill every due subscription in advance, one invoice per customer, set-based.

plan_invoices() computes exactly what a run would bill (the dry run shows it); write_invoices() writes it:
invoices, lines, next bill dates, audit events and outbox rows, in the caller's transaction. Subscriptions
are locked FOR UPDATE while planned, so two concurrent runs queue on them and the second finds nothing
due; UNIQUE(subscription_id, period_start) on lines is the last word if anything slips past.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache

from flask import current_app
from sqlalchemy import bindparam, case, exists, func, select, text, update

from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, InvoiceLine, Notification, Plan, Subscription
from isp_admin.models.base import utcnow
from isp_admin.services.billing.calendar import due_periods, prorate, tax_on
from isp_admin.services.billing.ledger import apply_available_credit, unallocated_payments, unapplied_credit_notes
from isp_admin.services.billing.numbering import allocate_numbers
from isp_admin.services.platform import audit, job_runs
from isp_admin.services.platform.bounds import max_catch_up_periods
from isp_admin.services.platform.bulk import bulk_insert, is_postgres, reserve_ids, update_dates_by_id

log = logging.getLogger(__name__)


@dataclass
class PlannedLine:
    """One line a run would write."""

    subscription_id: int
    kind: str
    description: str
    period_start: date | None
    period_end: date | None
    days: int | None
    period_days: int | None
    unit_price_cents: int
    amount_cents: int
    tax_rate_bp: int
    tax_cents: int


@dataclass
class PlannedInvoice:
    """One invoice a run would issue to one customer."""

    customer_id: int
    customer_name: str
    currency: str
    lines: list[PlannedLine] = field(default_factory=list)

    @property
    def subtotal_cents(self) -> int:
        """Sum of line amounts."""
        return sum(line.amount_cents for line in self.lines)

    @property
    def tax_cents(self) -> int:
        """Sum of line taxes."""
        return sum(line.tax_cents for line in self.lines)

    @property
    def total_cents(self) -> int:
        """Amount plus tax."""
        return self.subtotal_cents + self.tax_cents


@dataclass
class BillingPlan:
    """What a run would do: the invoices, and each subscription's next bill date afterwards."""

    invoices: list[PlannedInvoice]
    next_bill_dates: dict[int, date]
    activations: list[int]
    # (subscription_id, customer_id, reason): catch-ups too long to issue silently, held for review instead.
    holds: list[tuple[int, int, str]] = field(default_factory=list)
    approved: list[int] = field(default_factory=list)  # long catch-ups someone approved: billed, approval spent

    @property
    def total_cents(self) -> int:
        """Everything the run would invoice, tax included."""
        return sum(invoice.total_cents for invoice in self.invoices)


def billable_statuses() -> tuple[str, ...]:
    """Statuses the run bills: suspended too only when BILL_WHILE_SUSPENDED is on."""
    if current_app.config.get("BILL_WHILE_SUSPENDED"):
        return ("active", "pending", "suspended")
    return ("active", "pending")


def _due_rows(as_of: date, customer_range: tuple[int, int] | None, customer_id: int | None, lock: bool,
              subscription_id: int | None = None):
    s, p, c = Subscription.__table__.c, Plan.__table__.c, Customer.__table__.c
    # The first bill is the one before any line exists (not next_bill_date == start_date: a resume moves that).
    billed = exists().where(InvoiceLine.__table__.c.subscription_id == s.id)
    stmt = (select(s.id, s.customer_id, s.status, s.billing_day, s.next_bill_date, s.start_date, s.catch_up_approved,
                   s.pppoe_username,
                   func.coalesce(s.price_override_cents, p.monthly_price_cents).label("price"),
                   p.setup_fee_cents, p.tax_rate_bp, p.name.label("plan_name"), p.currency, c.name.label("customer"),
                   # Only plans with a setup fee need the probe; CASE skips it for the rest.
                   case((p.setup_fee_cents == 0, False), else_=~billed).label("never_billed"))
            .join(Plan.__table__, p.id == s.plan_id).join(Customer.__table__, c.id == s.customer_id)
            .where(s.status.in_(billable_statuses()), s.next_bill_date <= as_of, s.start_date <= as_of,
                   c.status != "closed", s.billing_hold_reason.is_(None))
            .order_by(s.customer_id, s.id))
    if customer_range:
        stmt = stmt.where(s.customer_id.between(*customer_range))
    if customer_id is not None:
        stmt = stmt.where(s.customer_id == customer_id)
    if subscription_id is not None:
        stmt = stmt.where(s.id == subscription_id)
    if lock and is_postgres():
        stmt = stmt.with_for_update(of=Subscription.__table__)
    return db.session.execute(stmt).mappings()


# Pure and shared by thousands of subscriptions with the same billing day: computed once per run.
_due_periods = lru_cache(maxsize=4096)(lambda next_bill, day, as_of: tuple(due_periods(next_bill, day, as_of)))


@lru_cache(maxsize=4096)
def _period_label(start: date, end: date, days: int, period_days: int) -> str:
    label = f"{start:%d %b %Y} – {end - timedelta(days=1):%d %b %Y}"
    return label if days == period_days else f"{label} ({days}/{period_days} days)"


def _line_label(plan_name: str, pppoe_username: str | None, start: date, end: date, days: int,
                period_days: int) -> str:
    # The plan and the PPPoE login: how staff and the customer know the service (not "subscription #289").
    service = f"{plan_name} · {pppoe_username}" if pppoe_username else plan_name
    return f"{service}, {_period_label(start, end, days, period_days)}"


def plan_invoices(as_of: date, customer_range: tuple[int, int] | None = None, customer_id: int | None = None,
                  lock: bool = False, subscription_id: int | None = None) -> BillingPlan:
    """Compute every line that is due on `as_of` (missed periods catch up, one line each)."""
    invoices: dict[int, PlannedInvoice] = {}
    next_dates: dict[int, date] = {}
    activations: list[int] = []
    holds: list[tuple[int, int, str]] = []
    approved: list[int] = []
    limit = max_catch_up_periods()
    for row in _due_rows(as_of, customer_range, customer_id, lock, subscription_id):
        # Far behind: more than `limit` periods for sure, without walking (or overflowing) the calendar there.
        far = (as_of - row["next_bill_date"]).days > 31 * (limit + 1) and not row["catch_up_approved"]
        periods = () if far else _due_periods(row["next_bill_date"], row["billing_day"], as_of)
        if far or len(periods) > limit:
            if not row["catch_up_approved"]:
                count = f"more than {limit}" if far else f"{len(periods)}"
                holds.append((row["id"], row["customer_id"],
                              f"{count} periods due from {row['next_bill_date']:%d %b %Y} (at most {limit} are "
                              "billed without review): approve the catch-up or correct the subscription"))
                continue
            approved.append(row["id"])
        invoice = invoices.get(row["customer_id"])
        if invoice is None:
            invoice = invoices[row["customer_id"]] = PlannedInvoice(row["customer_id"], row["customer"],
                                                                   row["currency"])
        first_billing = row["never_billed"]
        for start, end, days, period_days in periods:
            amount = prorate(row["price"], days, period_days)
            label = _line_label(row["plan_name"], row["pppoe_username"], start, end, days, period_days)
            invoice.lines.append(PlannedLine(row["id"], "subscription", label, start, end, days, period_days,
                                             row["price"], amount, row["tax_rate_bp"],
                                             tax_on(amount, row["tax_rate_bp"])))
            next_dates[row["id"]] = end
        if first_billing and row["setup_fee_cents"]:
            fee = row["setup_fee_cents"]
            invoice.lines.append(PlannedLine(row["id"], "setup_fee", f"Setup fee: {row['plan_name']}", None, None,
                                             None, None, fee, fee, row["tax_rate_bp"], tax_on(fee, row["tax_rate_bp"])))
        if row["status"] == "pending":
            activations.append(row["id"])
    return BillingPlan(list(invoices.values()), next_dates, activations, holds, approved)


def write_invoices(plan: BillingPlan, as_of: date, job_run_id: int | None = None) -> list[int]:
    """Issue the planned invoices in the current transaction; return the new invoice ids."""
    _hold_for_review(plan.holds, as_of)
    if not plan.invoices:
        return []
    now = utcnow()
    due = as_of + timedelta(days=current_app.config["PAYMENT_TERMS_DAYS"])
    ids = reserve_ids(Invoice.__table__, len(plan.invoices))
    invoice_rows, line_rows, audit_rows, mail_rows = [], [], [], []
    for invoice_id, planned in zip(ids, plan.invoices, strict=True):
        subtotal, tax = planned.subtotal_cents, planned.tax_cents  # summed once, not per use
        free = subtotal + tax == 0  # nothing owed: paid at issue, never left open awaiting a payment
        invoice_rows.append(dict(
            id=invoice_id, number=None, customer_id=planned.customer_id, status="paid" if free else "open",
            issue_date=as_of, due_date=due, currency=planned.currency, subtotal_cents=subtotal,
            tax_cents=tax, total_cents=subtotal + tax, amount_paid_cents=0,
            credit_applied_cents=0, paid_at=now if free else None, job_run_id=job_run_id, created_at=now,
            updated_at=now))
        for line in planned.lines:
            line_rows.append(dict(
                invoice_id=invoice_id, subscription_id=line.subscription_id, kind=line.kind,
                description=line.description, period_start=line.period_start, period_end=line.period_end,
                days=line.days, period_days=line.period_days, quantity=1, unit_price_cents=line.unit_price_cents,
                amount_cents=line.amount_cents, tax_rate_bp=line.tax_rate_bp, tax_cents=line.tax_cents))
        audit_rows.append((invoice_id, planned.customer_id,
                           {"number": None, "total_cents": subtotal + tax, "issue_date": as_of.isoformat()}))
        mail_rows.append(dict(customer_id=planned.customer_id, invoice_id=invoice_id, kind="invoice",
                              recipient=None, subject=None))
    _advance_subscriptions(plan, now)  # needs no number
    # Numbers last: the gapless sequence row stays locked until commit, and while one chunk holds it another
    # worker's chunk waits; building the rows (and moving the bill dates) first keeps that out of the locked stretch.
    numbers = allocate_numbers("INV", as_of.year, len(plan.invoices))
    for number, invoice_row, audit_row, mail_row in zip(numbers, invoice_rows, audit_rows, mail_rows, strict=True):
        invoice_row["number"] = number
        audit_row[2]["number"] = number
        mail_row["subject"] = f"Invoice {number}"
    bulk_insert(Invoice.__table__, invoice_rows)
    bulk_insert(InvoiceLine.__table__, line_rows)
    audit.record_many("invoice.issue", "invoices", audit_rows)
    # Brand-new invoices cannot collide on (invoice_id, kind), so the outbox rows can be copied in too.
    bulk_insert(Notification.__table__, _with_recipients(mail_rows, now))
    _apply_credit_where_any([p.customer_id for p in plan.invoices], as_of)
    from isp_admin.services.reporting.reports import invalidate_reports

    invalidate_reports()
    return ids


def _hold_for_review(holds: list[tuple[int, int, str]], as_of: date) -> None:
    """Put the plan's held subscriptions on hold, with their reason, audited (billing skips them from now on)."""
    if not holds:
        return
    table = Subscription.__table__
    db.session.execute(
        update(table).where(table.c.id == bindparam("sub_id"), table.c.billing_hold_reason.is_(None))
        .values(billing_hold_reason=bindparam("reason"), billing_held_on=as_of),
        [{"sub_id": sub_id, "reason": reason} for sub_id, _, reason in holds],
        execution_options={"synchronize_session": False})
    audit.record_many("subscription.billing_hold", "subscriptions", [
        (sub_id, customer_id, {"billing_hold_reason": reason, "billing_held_on": as_of.isoformat()})
        for sub_id, customer_id, reason in holds])


def _with_recipients(rows: list[dict], now) -> list[dict]:
    emails = dict(db.session.execute(select(Customer.id, Customer.email).where(
        Customer.id.in_({row["customer_id"] for row in rows}))).all())
    return [{**row, "recipient": emails.get(row["customer_id"]), "channel": "email", "status": "queued",
             "attempts": 0, "created_at": now} for row in rows]


def _advance_subscriptions(plan: BillingPlan, now) -> None:
    table = Subscription.__table__
    update_dates_by_id(table, "next_bill_date", plan.next_bill_dates, {"updated_at": now})
    if plan.approved:  # an approval covers the catch-up it was given for, not the next one
        db.session.execute(update(table).where(table.c.id.in_(plan.approved)).values(catch_up_approved=False),
                           execution_options={"synchronize_session": False})
    if plan.activations:
        db.session.execute(update(table).where(table.c.id.in_(plan.activations), table.c.status == "pending")
                           .values(status="active", updated_at=now), execution_options={"synchronize_session": False})


def _apply_credit_where_any(customer_ids: list[int], as_of: date) -> None:
    """Apply existing credit to the new invoices, for the few customers that have any."""
    from isp_admin.models import CreditNote, Payment

    with_money = set(db.session.scalars(select(Payment.customer_id).where(
        Payment.customer_id.in_(customer_ids), Payment.status == "completed").distinct()))
    with_money |= set(db.session.scalars(select(CreditNote.customer_id).where(
        CreditNote.customer_id.in_(customer_ids)).distinct()))
    for customer_id in sorted(with_money):
        if unallocated_payments(customer_id) or unapplied_credit_notes(customer_id):
            apply_available_credit(customer_id, as_of)


def customers_due(as_of: date) -> list[int]:
    """Return the ids of customers with something to bill on `as_of`, ascending."""
    s = Subscription.__table__.c
    return list(db.session.scalars(
        select(s.customer_id).where(s.status.in_(billable_statuses()), s.next_bill_date <= as_of,
                                    s.start_date <= as_of, s.billing_hold_reason.is_(None))
        .distinct().order_by(s.customer_id)))


def chunk_ranges(customer_ids: list[int], size: int) -> list[tuple[int, int]]:
    """Split sorted customer ids into inclusive (first, last) ranges of at most `size` customers."""
    return [(customer_ids[i], customer_ids[min(i + size, len(customer_ids)) - 1])
            for i in range(0, len(customer_ids), size)]


def bill_customer_range(as_of: date, customer_range: tuple[int, int], job_run_id: int | None = None) -> dict:
    """Bill one chunk of customers (the unit a worker runs in one transaction); return its counts."""
    if is_postgres():
        # Customers first, then their subscriptions: the same order as payments (customer lock, then
        # reactivation), so a payment made during the run waits for the chunk and then sees its invoices.
        db.session.execute(select(Customer.id).where(Customer.id.between(*customer_range))
                           .order_by(Customer.id).with_for_update())
    try:  # the fast path: the whole chunk planned and written set-based, in one savepoint
        plans = [in_savepoint(lambda: _bill(as_of, job_run_id, customer_range=customer_range))]
        failures = []
    except Exception as exc:
        if job_runs.is_transient(exc):
            raise  # a lost connection or a deadlock: the chunk's retry may cure it, nobody is to blame
        # One bad row (a date out of range, a line the database refuses) must not stop the others (DESIGN §3):
        # the savepoint is gone, so bill the chunk again one customer at a time, each in a savepoint of its own.
        log.warning("billing %s for customers %s-%s failed (%s: %s); billing them one by one", as_of,
                    *customer_range, type(exc).__name__, exc)
        plans, failures = _bill_one_by_one(as_of, customer_range, job_run_id)
    invoices = [invoice for plan in plans for invoice in plan.invoices]
    return {"invoices": len(invoices), "lines": sum(len(i.lines) for i in invoices),
            "total_cents": sum(plan.total_cents for plan in plans), **_held(plans), **job_runs.failure_counts(failures)}


def _held(plans: list[BillingPlan]) -> dict:
    """The count of subscriptions held for review, for the run's report (absent when none was)."""
    held = sum(len(plan.holds) for plan in plans)
    return {"held_for_review": held} if held else {}


def _bill(as_of: date, job_run_id: int | None, **where) -> BillingPlan:
    plan = plan_invoices(as_of, lock=True, **where)
    write_invoices(plan, as_of, job_run_id)
    return plan


def _bill_one_by_one(as_of: date, customer_range: tuple[int, int], job_run_id: int | None):
    """Bill each customer of the range in its own savepoint; return the plans written and the customers left out."""
    s = Subscription.__table__.c
    # A superset of who is due (plan_invoices has the last word): customers with a subscription due by date.
    candidates = db.session.scalars(
        select(s.customer_id).where(s.customer_id.between(*customer_range), s.status.in_(billable_statuses()),
                                    s.next_bill_date <= as_of, s.start_date <= as_of)
        .distinct().order_by(s.customer_id)).all()
    plans, failures = [], []
    for customer_id in candidates:
        try:
            plans.append(in_savepoint(lambda c=customer_id: _bill(as_of, job_run_id, customer_id=c)))
        except Exception as exc:
            if job_runs.is_transient(exc):
                raise
            log.error("billing %s: customer %s left out: %s: %s", as_of, customer_id, type(exc).__name__, exc,
                      exc_info=True)
            failures.append(job_runs.failure(customer_id, "generate_monthly_invoices", as_of, exc))
    return plans, failures


def in_savepoint(work):
    """Run `work` in a savepoint, with the deferred (at-commit) checks run inside it: a refusal undoes only it."""
    checked = False
    try:
        with db.session.begin_nested():
            result = work()
            if is_postgres():
                # The ledger's constraint triggers wait for COMMIT, past the savepoint; running them here lets a
                # refusal roll back this customer (or chunk) alone instead of the whole transaction at commit.
                db.session.flush()
                checked = True
                db.session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))
        return result
    finally:
        if checked:  # every deferrable constraint of the schema is INITIALLY DEFERRED: back to that
            db.session.execute(text("SET CONSTRAINTS ALL DEFERRED"))


def generate_invoice_for_customer(customer_id: int, as_of: date) -> Invoice | None:
    """Bill one customer now for everything due up to `as_of`; None when nothing is due."""
    from isp_admin.services.billing.ledger import lock_customer
    from isp_admin.services.platform.bounds import check_dates
    from isp_admin.services.platform.clock import today

    # Within the window every date keeps (a run for a day not yet come is refused where people ask for one).
    check_dates(max(as_of, today()), future=False, as_of=as_of)

    lock_customer(customer_id)
    plan = plan_invoices(as_of, customer_id=customer_id, lock=True)
    ids = write_invoices(plan, as_of)
    return db.session.get(Invoice, ids[0]) if ids else None

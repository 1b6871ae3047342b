"""Read-side queries for the billing pages: lists, details, a customer's account and statement.

Lists select only the columns they show and page by keyset over ids (newest first), so each runs the same
few statements at any depth and any table size. Nothing here writes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta

from flask import current_app
from sqlalchemy import Date, func, literal, or_, select, union_all

from isp_admin.database import escape_like
from isp_admin.errors import NotFound
from isp_admin.extensions import db
from isp_admin.models import (
    CreditAllocation,
    CreditNote,
    Customer,
    Invoice,
    InvoiceLine,
    Notification,
    Payment,
    PaymentAllocation,
    Plan,
    Subscription,
)
from isp_admin.models.invoices import INVOICE_STATUSES, OPEN_STATUSES, invoice_balance
from isp_admin.models.payments import PAYMENT_METHODS
from isp_admin.services.platform.audit import entity_history
from isp_admin.services.platform.pagination import Page, keyset_by_id, ordering_column

STATEMENT_LIMIT = 500
FULL_NUMBER = re.compile(r"[A-Z]{2,4}-\d{4}-\d{6}")



def customer_matches(column, text: str):
    """Return a condition on a customer id column: `text` is a customer id or an account number."""
    text = text.strip()
    # Account numbers are issued upper-case; comparing to the upper-cased input keeps the unique index in play.
    by_account = select(Customer.id).where(Customer.account_number == text.upper())
    if text.isdigit() and int(text) < 2**63:
        return or_(column == int(text), column.in_(by_account))
    return column.in_(by_account)


def find_customer_id(text: str) -> int | None:
    """Return the id of the customer whose id or account number is `text`, if any."""
    if not text or not text.strip() or "\x00" in text:
        return None
    return db.session.scalar(select(Customer.id).where(customer_matches(Customer.id, text)).limit(1))


INVOICE_ORDERINGS = ("id", "issue_date", "due_date", "total_cents")
PAYMENT_ORDERINGS = ("id", "received_on", "amount_cents")


# --- invoices ---------------------------------------------------------------------------------------------------

def list_invoices(*, status: str | None = None, customer: str | None = None, number: str | None = None,
                  issued_from: date | None = None, issued_to: date | None = None, due_from: date | None = None,
                  due_to: date | None = None, min_total: int | None = None, max_total: int | None = None,
                  size: int = 50, after: str | None = None, before: str | None = None, offset: int = 0,
                  ordering: str = "-id") -> Page:
    """Return one page of invoices (newest first, or by `ordering`) matching the filters, with a capped count."""
    i, c = Invoice.__table__.c, Customer.__table__.c
    conditions = []
    if status:
        conditions.append(i.status == status)
    if customer:
        conditions.append(customer_matches(i.customer_id, customer))
    if number and number.strip():
        number = number.strip()
        if FULL_NUMBER.fullmatch(number.upper()):
            conditions.append(i.number == number.upper())  # the unique index answers a whole number at once
        else:
            conditions.append(i.number.ilike(f"%{escape_like(number)}%", escape="\\"))
    for column, low, high in ((i.issue_date, issued_from, issued_to), (i.due_date, due_from, due_to),
                              (i.total_cents, min_total, max_total)):
        if low is not None:
            conditions.append(column >= low)
        if high is not None:
            conditions.append(column <= high)
    stmt = (select(i.id, i.number, i.status, i.issue_date, i.due_date, i.currency, i.subtotal_cents, i.tax_cents,
                   i.total_cents, i.amount_paid_cents, i.credit_applied_cents,
                   invoice_balance(i).label("balance_cents"),
                   i.sent_at, i.paid_at, i.voided_at, i.created_at,
                   i.customer_id, c.name.label("customer_name"), c.account_number)
            .join(Customer.__table__, c.id == i.customer_id).where(*conditions))
    sort_col, descending = ordering_column(i, ordering, INVOICE_ORDERINGS)
    return keyset_by_id(stmt, i.id, size, after, before, offset=offset, sort_col=sort_col, descending=descending)


@dataclass
class InvoiceDetail:
    """Everything the invoice page shows, loaded in a fixed number of queries."""

    invoice: Invoice
    customer: Customer
    lines: list[InvoiceLine]
    payments: list[tuple[PaymentAllocation, Payment]]
    credits: list[tuple[CreditAllocation, CreditNote]]
    credit_notes: list[CreditNote]
    notifications: list[Notification]
    history: list = field(default_factory=list)
    services: dict[int, str] = field(default_factory=dict)  # subscription id -> "Fibre 300 · zoe.obrien"

    @staticmethod
    def last_day(line: InvoiceLine) -> date | None:
        """The last day a line's period covers (periods are stored end-exclusive)."""
        return line.period_end - timedelta(days=1) if line.period_end else None


def invoice_detail(invoice_id: int) -> InvoiceDetail:
    """Return an invoice with its lines, the money applied to it, its emails and its audit history."""
    row = db.session.execute(select(Invoice, Customer).join(Customer, Customer.id == Invoice.customer_id)
                             .where(Invoice.id == invoice_id)).first()
    if row is None:
        raise NotFound("No such invoice.")
    invoice, customer = row
    lines = list(db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id)
                                    .order_by(InvoiceLine.id)))
    payments = [tuple(r) for r in db.session.execute(
        select(PaymentAllocation, Payment).join(Payment, Payment.id == PaymentAllocation.payment_id)
        .where(PaymentAllocation.invoice_id == invoice.id).order_by(PaymentAllocation.id))]
    credits = [tuple(r) for r in db.session.execute(
        select(CreditAllocation, CreditNote).join(CreditNote, CreditNote.id == CreditAllocation.credit_note_id)
        .where(CreditAllocation.invoice_id == invoice.id).order_by(CreditAllocation.id))]
    notes = list(db.session.scalars(select(CreditNote).where(CreditNote.invoice_id == invoice.id)
                                    .order_by(CreditNote.id)))
    notifications = list(db.session.scalars(select(Notification).where(Notification.invoice_id == invoice.id)
                                            .order_by(Notification.id)))
    return InvoiceDetail(invoice, customer, lines, payments, credits, notes, notifications,
                         entity_history("invoices", invoice.id),
                         service_labels({line.subscription_id for line in lines} - {None}))


def service_labels(subscription_ids: set[int]) -> dict[int, str]:
    """Return each subscription's plan and PPPoE login ("Fibre 300 · zoe.obrien"), in one query."""
    if not subscription_ids:
        return {}
    rows = db.session.execute(select(Subscription.id, Plan.name, Subscription.pppoe_username)
                              .join(Plan, Plan.id == Subscription.plan_id)
                              .where(Subscription.id.in_(subscription_ids)))
    return {sub_id: f"{plan} · {login}" if login else plan for sub_id, plan, login in rows}


def open_invoice_choices(customer_id: int) -> list[tuple[int, str, int, date]]:
    """Return (id, number, balance, due date) of the customer's unpaid issued invoices, oldest due first."""
    return [tuple(r) for r in db.session.execute(
        select(Invoice.id, Invoice.number, Invoice.balance_cents, Invoice.due_date)
        .where(Invoice.customer_id == customer_id, Invoice.is_open)
        .order_by(Invoice.due_date, Invoice.id).limit(200))]


# --- payments ---------------------------------------------------------------------------------------------------

def list_payments(*, customer: str | None = None, method: str | None = None, status: str | None = None,
                  received_from: date | None = None, received_to: date | None = None, size: int = 50,
                  after: str | None = None, before: str | None = None, offset: int = 0, ordering: str = "-id",
                  min_amount: int | None = None, max_amount: int | None = None) -> Page:
    """Return one page of payments (newest first) matching the filters, with a capped count: two queries."""
    p, c = Payment.__table__.c, Customer.__table__.c
    conditions = []
    if customer:
        conditions.append(customer_matches(p.customer_id, customer))
    if method:
        conditions.append(p.method == method)
    if status:
        conditions.append(p.status == status)
    if received_from is not None:
        conditions.append(p.received_on >= received_from)
    if received_to is not None:
        conditions.append(p.received_on <= received_to)
    if min_amount is not None:
        conditions.append(p.amount_cents >= min_amount)
    if max_amount is not None:
        conditions.append(p.amount_cents <= max_amount)
    stmt = (select(p.id, p.amount_cents, p.currency, p.method, p.reference, p.provider, p.received_on, p.status,
                   p.recorded_by, p.reversed_at, p.reversal_reason, p.created_at,
                   p.customer_id, c.name.label("customer_name"), c.account_number)
            .join(Customer.__table__, c.id == p.customer_id).where(*conditions))
    sort_col, descending = ordering_column(p, ordering, PAYMENT_ORDERINGS)
    return keyset_by_id(stmt, p.id, size, after, before, offset=offset, sort_col=sort_col, descending=descending)


@dataclass
class PaymentDetail:
    """A payment, where its money went, and what is left over as credit."""

    payment: Payment
    customer: Customer
    allocations: list[tuple[PaymentAllocation, Invoice]]
    history: list

    @property
    def allocated_cents(self) -> int:
        """Money of this payment applied to invoices now."""
        return sum(a.amount_cents for a, _ in self.allocations if a.reversed_at is None)

    @property
    def credit_cents(self) -> int:
        """The remainder the customer holds as credit (none once reversed)."""
        if self.payment.status != "completed":
            return 0
        return self.payment.amount_cents - self.allocated_cents


def payment_detail(payment_id: int) -> PaymentDetail:
    """Return a payment with its customer, allocations (and their invoices) and audit history."""
    from isp_admin.services.billing.payments import allocations_of

    row = db.session.execute(select(Payment, Customer).join(Customer, Customer.id == Payment.customer_id)
                             .where(Payment.id == payment_id)).first()
    if row is None:
        raise NotFound("No such payment.")
    payment, customer = row
    return PaymentDetail(payment, customer, allocations_of(payment.id), entity_history("payments", payment.id))


# --- a customer's account ---------------------------------------------------------------------------------------

@dataclass
class AccountOverview:
    """The balance card and recent documents on a customer's page."""

    owed_cents: int
    overdue_cents: int
    credit_cents: int
    invoices: list
    payments: list

    @property
    def net_cents(self) -> int:
        """Owed minus credit: positive means the customer owes money."""
        return self.owed_cents - self.credit_cents


def account_overview(customer_id: int, today: date, recent: int = 5) -> AccountOverview:
    """Return what the customer owes, has overdue and holds in credit, and its latest invoices and payments."""
    # The same sums as ledger.customer_balance, in one statement: the customer page has a tight query budget.
    mine = Invoice.customer_id == customer_id, Invoice.is_open
    owed = select(func.coalesce(func.sum(Invoice.balance_cents), 0)).where(*mine).scalar_subquery()
    overdue = (select(func.coalesce(func.sum(Invoice.balance_cents), 0)).where(*mine, Invoice.due_date < today)
               .scalar_subquery())
    allocated = (select(func.coalesce(func.sum(PaymentAllocation.amount_cents), 0))
                 .where(PaymentAllocation.payment_id == Payment.id, PaymentAllocation.reversed_at.is_(None))
                 .correlate(Payment).scalar_subquery())
    unallocated = (select(func.coalesce(func.sum(Payment.amount_cents - allocated), 0))
                   .where(Payment.customer_id == customer_id, Payment.status == "completed").scalar_subquery())
    applied = (select(func.coalesce(func.sum(CreditAllocation.amount_cents), 0))
               .where(CreditAllocation.credit_note_id == CreditNote.id, CreditAllocation.reversed_at.is_(None))
               .correlate(CreditNote).scalar_subquery())
    unapplied = (select(func.coalesce(func.sum(CreditNote.amount_cents - applied), 0))
                 .where(CreditNote.customer_id == customer_id).scalar_subquery())
    sums = db.session.execute(select(owed, overdue, unallocated, unapplied)).one()
    invoices = db.session.execute(
        select(Invoice.id, Invoice.number, Invoice.status, Invoice.issue_date, Invoice.due_date, Invoice.currency,
               Invoice.total_cents, Invoice.balance_cents.label("balance_cents"))
        .where(Invoice.customer_id == customer_id).order_by(Invoice.id.desc()).limit(recent)).mappings().all()
    payments = db.session.execute(
        select(Payment.id, Payment.amount_cents, Payment.currency, Payment.method, Payment.reference,
               Payment.received_on, Payment.status)
        .where(Payment.customer_id == customer_id).order_by(Payment.id.desc()).limit(recent)).mappings().all()
    return AccountOverview(int(sums[0]), int(sums[1]), int(sums[2]) + int(sums[3]), list(invoices), list(payments))


@dataclass
class Statement:
    """A customer's ledger over a date range: opening balance, dated entries with running balance, closing."""

    start: date
    end: date
    opening_cents: int
    rows: list[dict]
    truncated: bool

    @property
    def closing_cents(self) -> int:
        """The running balance after the last entry shown."""
        return self.rows[-1]["running_cents"] if self.rows else self.opening_cents


def _day_of(timestamp):
    """The calendar day of a timestamp column, on PostgreSQL and SQLite alike.

    CAST(x AS DATE) is no date on SQLite (NUMERIC affinity keeps the leading year, 2026), which put every
    reversal into the opening balance and off the statement; date(x) means the same day on both.
    """
    return func.date(timestamp, type_=Date)


def _ledger(customer_id: int):
    """Every dated money event of a customer: + charges it, - settles it (drafts are not on a statement)."""
    i, p, n = Invoice.__table__.c, Payment.__table__.c, CreditNote.__table__.c
    return union_all(
        select(i.issue_date.label("day"), i.created_at.label("at"), literal("invoice").label("kind"),
               i.id.label("id"), i.number.label("ref"), i.total_cents.label("amount_cents"))
        .where(i.customer_id == customer_id, i.status != "draft"),
        select(p.received_on, p.created_at, literal("payment"), p.id, p.reference, -p.amount_cents)
        .where(p.customer_id == customer_id),
        select(_day_of(p.reversed_at), p.reversed_at, literal("reversal"), p.id, p.reversal_reason,
               p.amount_cents)
        .where(p.customer_id == customer_id, p.status == "reversed"),
        select(n.issue_date, n.created_at, literal("credit_note"), n.id, n.number, -n.amount_cents)
        .where(n.customer_id == customer_id),
    ).subquery()


def statement(customer_id: int, start: date, end: date, limit: int = STATEMENT_LIMIT) -> Statement:
    """Return the customer's statement from `start` to `end` (inclusive), at most `limit` entries."""
    ledger = _ledger(customer_id)
    opening = db.session.scalar(select(func.coalesce(func.sum(ledger.c.amount_cents), 0))
                                .where(ledger.c.day < start))
    rows = db.session.execute(
        select(ledger).where(ledger.c.day >= start, ledger.c.day <= end)
        .order_by(ledger.c.day, ledger.c.at, ledger.c.kind, ledger.c.id).limit(limit + 1)).mappings().all()
    running, out = int(opening), []
    for row in rows[:limit]:
        running += row["amount_cents"]
        out.append({**row, "running_cents": running})
    return Statement(start, end, int(opening), out, len(rows) > limit)



# --- stats ------------------------------------------------------------------------------------------------------

def invoice_stats(issued_from: date | None = None, issued_to: date | None = None) -> dict:
    """Count and sum invoices by status (issued in the range, if given): one grouped query."""
    i = Invoice.__table__.c
    conditions = [c for c in (i.issue_date >= issued_from if issued_from else None,
                              i.issue_date <= issued_to if issued_to else None) if c is not None]
    rows = db.session.execute(
        select(i.status, func.count(), func.coalesce(func.sum(i.total_cents), 0),
               func.coalesce(func.sum(invoice_balance(i)), 0))
        .where(*conditions).group_by(i.status)).all()
    by_status = {status: {"count": 0, "total_cents": 0, "balance_cents": 0} for status in INVOICE_STATUSES}
    for status, count, total, balance in rows:
        by_status[status] = {"count": count, "total_cents": int(total), "balance_cents": int(balance)}
    issued = [s for s in INVOICE_STATUSES if s not in ("draft", "void")]
    return {
        "issued_from": issued_from, "issued_to": issued_to, "currency": current_app.config["CURRENCY"],
        "by_status": by_status,
        "invoiced_cents": sum(by_status[s]["total_cents"] for s in issued),
        "outstanding_cents": sum(by_status[s]["balance_cents"] for s in OPEN_STATUSES),
        "overdue_cents": by_status["overdue"]["balance_cents"],
        "overdue_count": by_status["overdue"]["count"],
    }


def payment_stats(received_from: date | None = None, received_to: date | None = None) -> dict:
    """Count and sum payments by method and status (received in the range, if given): one grouped query."""
    p = Payment.__table__.c
    conditions = [c for c in (p.received_on >= received_from if received_from else None,
                              p.received_on <= received_to if received_to else None) if c is not None]
    rows = db.session.execute(
        select(p.method, p.status, func.count(), func.coalesce(func.sum(p.amount_cents), 0))
        .where(*conditions).group_by(p.method, p.status)).all()
    by_method = {method: {"count": 0, "amount_cents": 0} for method in PAYMENT_METHODS}
    received = reversed_cents = count = reversed_count = 0
    for method, status, n, amount in rows:
        if status == "completed":
            by_method[method]["count"] += n
            by_method[method]["amount_cents"] += int(amount)
            received, count = received + int(amount), count + n
        else:
            reversed_cents, reversed_count = reversed_cents + int(amount), reversed_count + n
    return {
        "received_from": received_from, "received_to": received_to, "currency": current_app.config["CURRENCY"],
        "count": count, "received_cents": received, "reversed_count": reversed_count,
        "reversed_cents": reversed_cents, "by_method": by_method,
    }

"""The customer ledger: applying payments and credit to invoices, settling, balances, reactivation.

Invariants (checked by reconcile): an invoice's amount_paid/credit_applied equal its active allocations;
a payment or credit note never has more allocated than its amount; a customer's credit is what its
completed payments and credit notes have left unallocated.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import (
    CreditAllocation,
    CreditNote,
    Customer,
    Invoice,
    Payment,
    PaymentAllocation,
    Subscription,
)
from isp_admin.models.base import utcnow
from isp_admin.services.platform import audit


def lock_customer(customer_id: int) -> Customer:
    """Lock the customer row: every money or service-state write on one customer runs one at a time.

    Lock first, then read (DESIGN §3): every row the session read before the lock is forgotten here, so what
    the caller reads next comes fresh from the database, as of after whoever held the lock committed.
    """
    db.session.flush()  # pending changes reach the database before their objects are expired
    db.session.expire_all()
    stmt = select(Customer).where(Customer.id == customer_id).execution_options(populate_existing=True)
    customer = db.session.scalar(stmt.with_for_update())
    if customer is None:
        from isp_admin.errors import NotFound

        raise NotFound("No such customer.")
    return customer


def lock_and_load(model, row_id: int, missing: str):
    """Lock the customer that owns a row (an invoice, payment or subscription), then load the row fresh.

    The one way a write gets the record it changes: never a copy read before the customer's lock.
    """
    from isp_admin.errors import NotFound

    customer_id = db.session.scalar(select(model.customer_id).where(model.id == row_id))
    if customer_id is None:
        raise NotFound(missing)
    lock_customer(customer_id)
    row = db.session.scalar(select(model).where(model.id == row_id).execution_options(populate_existing=True))
    if row is None or row.customer_id != customer_id:  # deleted (a draft) while we waited for the lock
        raise NotFound(missing)
    return row


def open_invoices(customer_id: int) -> list[Invoice]:
    """Return the customer's unpaid issued invoices, oldest due date first."""
    return list(db.session.scalars(
        select(Invoice).where(Invoice.customer_id == customer_id, Invoice.is_open)
        .order_by(Invoice.due_date, Invoice.id)))


def settle(invoice: Invoice, today: date) -> None:
    """Set an issued invoice's status from its balance: paid when nothing is owed, else open or overdue."""
    if invoice.status in ("draft", "void"):
        return
    before = invoice.status
    if invoice.balance_cents == 0:
        invoice.status = "paid"
        invoice.paid_at = invoice.paid_at or utcnow()
    else:
        invoice.status = "overdue" if today > invoice.due_date else "open"
        invoice.paid_at = None
    if invoice.status != before:
        audit.record(f"invoice.{invoice.status}", invoice, before={"status": before},
                     after={"status": invoice.status}, customer_id=invoice.customer_id)


def unallocated_payments(customer_id: int) -> list[tuple[Payment, int]]:
    """Return the customer's completed payments with money left to allocate, oldest first."""
    allocated = (select(func.coalesce(func.sum(PaymentAllocation.amount_cents), 0))
                 .where(PaymentAllocation.payment_id == Payment.id, PaymentAllocation.reversed_at.is_(None))
                 .correlate(Payment).scalar_subquery())
    rows = db.session.execute(
        select(Payment, Payment.amount_cents - allocated)
        .where(Payment.customer_id == customer_id, Payment.status == "completed",
               Payment.amount_cents > allocated)
        .order_by(Payment.received_on, Payment.id)).all()
    return [(payment, left) for payment, left in rows]


def unapplied_credit_notes(customer_id: int) -> list[tuple[CreditNote, int]]:
    """Return the customer's credit notes with credit left to apply, oldest first."""
    applied = (select(func.coalesce(func.sum(CreditAllocation.amount_cents), 0))
               .where(CreditAllocation.credit_note_id == CreditNote.id, CreditAllocation.reversed_at.is_(None))
               .correlate(CreditNote).scalar_subquery())
    rows = db.session.execute(
        select(CreditNote, CreditNote.amount_cents - applied)
        .where(CreditNote.customer_id == customer_id, CreditNote.amount_cents > applied)
        .order_by(CreditNote.id)).all()
    return [(note, left) for note, left in rows]


def _spread(amount: int, invoices: list[Invoice], today: date, allocate) -> int:
    """Apply up to `amount` to unpaid `invoices` in order via `allocate(invoice, cents)`; return what is left."""
    for invoice in invoices:
        if amount <= 0:
            break
        take = min(amount, invoice.balance_cents)
        if take <= 0 or not invoice.is_open:
            continue
        allocate(invoice, take)
        amount -= take
        settle(invoice, today)
    return amount


def allocate_payment(payment: Payment, amount: int, invoices: list[Invoice], today: date) -> int:
    """Apply up to `amount` of a payment to `invoices` in order; return what is left."""
    def allocate(invoice: Invoice, cents: int) -> None:
        db.session.add(PaymentAllocation(payment_id=payment.id, invoice_id=invoice.id, amount_cents=cents))
        invoice.amount_paid_cents += cents

    return _spread(amount, invoices, today, allocate)


def apply_credit_note(note: CreditNote, amount: int, invoices: list[Invoice], today: date) -> int:
    """Apply up to `amount` of a credit note to `invoices` in order; return what is left."""
    def allocate(invoice: Invoice, cents: int) -> None:
        db.session.add(CreditAllocation(credit_note_id=note.id, invoice_id=invoice.id, amount_cents=cents))
        invoice.credit_applied_cents += cents

    return _spread(amount, invoices, today, allocate)


def apply_available_credit(customer_id: int, today: date) -> int:
    """Apply the customer's unallocated payments and credit notes to its open invoices; return cents applied."""
    invoices = open_invoices(customer_id)
    if not invoices:
        return 0
    applied = 0
    for payment, left in unallocated_payments(customer_id):
        rest = allocate_payment(payment, left, invoices, today)
        applied += left - rest
    for note, left in unapplied_credit_notes(customer_id):
        rest = apply_credit_note(note, left, invoices, today)
        applied += left - rest
    db.session.flush()
    return applied


@dataclass
class Balance:
    """A customer's position: what its open invoices owe, what is overdue, and its credit."""

    owed_cents: int
    overdue_cents: int
    credit_cents: int

    @property
    def net_cents(self) -> int:
        """Owed minus credit: positive means the customer owes money."""
        return self.owed_cents - self.credit_cents


def customer_balance(customer_id: int, today: date) -> Balance:
    """Return the customer's balance from its invoices, payments and credit notes."""
    owed, overdue = db.session.execute(
        select(func.coalesce(func.sum(Invoice.balance_cents), 0),
               func.coalesce(func.sum(Invoice.balance_cents).filter(Invoice.due_date < today), 0))
        .where(Invoice.customer_id == customer_id, Invoice.is_open)).one()
    credit = sum(left for _, left in unallocated_payments(customer_id)) + \
        sum(left for _, left in unapplied_credit_notes(customer_id))
    return Balance(int(owed), int(overdue), credit)


def overdue_cents(customer_id: int, today: date) -> int:
    """Return what the customer owes on invoices past their due date."""
    return int(db.session.scalar(
        select(func.coalesce(func.sum(Invoice.balance_cents), 0))
        .where(Invoice.customer_id == customer_id, Invoice.is_open, Invoice.due_date < today)))


def reactivate_if_paid(customer_id: int, today: date) -> list[Subscription]:
    """Resume the customer's non-payment suspensions if nothing is overdue any more (same transaction)."""
    if overdue_cents(customer_id, today) > 0:
        return []
    subs = list(db.session.scalars(select(Subscription).where(
        Subscription.customer_id == customer_id, Subscription.status == "suspended",
        Subscription.suspension_reason == "non_payment")))
    for sub in subs:
        reactivate_subscription(sub, today)
    if subs:
        from isp_admin.services.customers.accounts import refresh_status
        from isp_admin.services.messaging.notifications import queue_notification

        refresh_status(db.session.get(Customer, customer_id))
        queue_notification(customer_id, "reactivation", None, "Your service has been restored")
    return subs


def reactivate_subscription(sub: Subscription, today: date) -> None:
    """Make a suspended subscription active: periods begun while active are billed, days suspended are not."""
    from isp_admin.services.customers.suspensions import restart_billing

    before = {"status": sub.status, "suspension_reason": sub.suspension_reason,
              "next_bill_date": sub.next_bill_date.isoformat()}
    sub.status = "active"
    sub.suspension_reason = None
    restart_billing(sub, today)
    audit.record("subscription.reactivate", sub, before=before,
                 after={"status": "active", "suspension_reason": None,
                        "next_bill_date": sub.next_bill_date.isoformat()}, customer_id=sub.customer_id)

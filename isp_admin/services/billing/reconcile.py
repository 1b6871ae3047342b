"""Reconcile: recompute every balance from invoices, lines, payments, allocations and credit notes."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import (
    AuditEvent,
    CreditAllocation,
    CreditNote,
    Invoice,
    InvoiceLine,
    Payment,
    PaymentAllocation,
    Subscription,
)
from isp_admin.models.invoices import OPEN_STATUSES
from isp_admin.services.billing.coverage import coverage_problems


@dataclass
class Mismatch:
    """One broken invariant: which record, what was stored, what the rows say."""

    entity: str
    entity_id: int
    customer_id: int | None
    problem: str
    stored: int | str | None
    computed: int | str | None


def _sums(model, key, amount, *where):
    return dict(db.session.execute(select(key, func.sum(amount)).where(*where).group_by(key)).all())


def reconcile() -> list[Mismatch]:
    """Return every mismatch between stored totals and the rows that should produce them (none is clean)."""
    out: list[Mismatch] = []
    line_amount = _sums(InvoiceLine, InvoiceLine.invoice_id, InvoiceLine.amount_cents)
    line_tax = _sums(InvoiceLine, InvoiceLine.invoice_id, InvoiceLine.tax_cents)
    # Only completed payments count: an allocation left active on a reversed payment is money that came back.
    paid = dict(db.session.execute(
        select(PaymentAllocation.invoice_id, func.sum(PaymentAllocation.amount_cents))
        .join(Payment, Payment.id == PaymentAllocation.payment_id)
        .where(PaymentAllocation.reversed_at.is_(None), Payment.status == "completed")
        .group_by(PaymentAllocation.invoice_id)).all())
    credited = _sums(CreditAllocation, CreditAllocation.invoice_id, CreditAllocation.amount_cents,
                     CreditAllocation.reversed_at.is_(None))
    for inv in db.session.execute(select(Invoice.id, Invoice.customer_id, Invoice.status, Invoice.subtotal_cents,
                                         Invoice.tax_cents, Invoice.amount_paid_cents,
                                         Invoice.credit_applied_cents, Invoice.total_cents)):
        checks = [
            ("subtotal differs from its lines", inv.subtotal_cents, line_amount.get(inv.id, 0)),
            ("tax differs from its lines", inv.tax_cents, line_tax.get(inv.id, 0)),
            ("amount paid differs from its payment allocations", inv.amount_paid_cents, paid.get(inv.id, 0)),
            ("credit applied differs from its credit allocations", inv.credit_applied_cents,
             credited.get(inv.id, 0)),
        ]
        balance = inv.total_cents - paid.get(inv.id, 0) - credited.get(inv.id, 0)
        if inv.status == "paid" and balance != 0:
            checks.append(("paid but a balance remains", 0, balance))
        if inv.status in OPEN_STATUSES and balance <= 0:
            checks.append(("unpaid but nothing is owed", inv.status, balance))
        if inv.status == "void" and paid.get(inv.id, 0):
            checks.append(("void but payments still applied", 0, paid.get(inv.id, 0)))
        out += [Mismatch("invoice", inv.id, inv.customer_id, problem, stored, computed)
                for problem, stored, computed in checks if stored != computed]
    allocated = _sums(PaymentAllocation, PaymentAllocation.payment_id, PaymentAllocation.amount_cents,
                      PaymentAllocation.reversed_at.is_(None))
    for pay in db.session.execute(select(Payment.id, Payment.customer_id, Payment.status, Payment.amount_cents)):
        used = allocated.get(pay.id, 0)
        if used > pay.amount_cents:
            out.append(Mismatch("payment", pay.id, pay.customer_id, "allocated more than received",
                                pay.amount_cents, used))
        if pay.status == "reversed" and used:
            out.append(Mismatch("payment", pay.id, pay.customer_id, "reversed but still allocated", 0, used))
    applied = _sums(CreditAllocation, CreditAllocation.credit_note_id, CreditAllocation.amount_cents,
                    CreditAllocation.reversed_at.is_(None))
    for note in db.session.execute(select(CreditNote.id, CreditNote.customer_id, CreditNote.amount_cents)):
        if applied.get(note.id, 0) > note.amount_cents:
            out.append(Mismatch("credit_note", note.id, note.customer_id, "applied more than its amount",
                                note.amount_cents, applied.get(note.id, 0)))
    out += _ledger_mismatches()
    out += _issued_invoices_changed()
    out += _credit_note_mismatches()
    out += [Mismatch("subscription", p.subscription_id, p.customer_id, f"coverage: {p.problem}",
                     p.start.isoformat(), p.end.isoformat()) for p in coverage_problems()]
    return out


def _issued_invoices_changed() -> list[Mismatch]:
    """An issued invoice's total must be the total it was issued with (its invoice.issue audit event)."""
    issued = (select(AuditEvent.entity_id, func.max(AuditEvent.id).label("event_id"))
              .where(AuditEvent.action == "invoice.issue", AuditEvent.entity_type == "invoices")
              .group_by(AuditEvent.entity_id).subquery())
    rows = db.session.execute(
        select(Invoice.id, Invoice.customer_id, Invoice.total_cents, AuditEvent.after)
        .join(issued, issued.c.entity_id == Invoice.id).join(AuditEvent, AuditEvent.id == issued.c.event_id)
        .where(Invoice.status != "draft"))
    out = []
    for invoice_id, customer_id, total, after in rows:
        at_issue = (after or {}).get("total_cents")
        if at_issue is not None and at_issue != total:
            out.append(Mismatch("invoice", invoice_id, customer_id, "changed since it was issued", total, at_issue))
    return out


def _credit_note_mismatches() -> list[Mismatch]:
    """One cancellation credit per subscription, one plan-change credit per subscription and day, each worth
    exactly the unused days of the lines billed when it was made."""
    from isp_admin.services.billing.invoices import unused_credit

    out = []
    notes = db.session.execute(
        select(CreditNote.id, CreditNote.customer_id, CreditNote.kind, CreditNote.subscription_id,
               CreditNote.issue_date, CreditNote.subtotal_cents, CreditNote.created_at, Subscription.end_date)
        .join(Subscription, Subscription.id == CreditNote.subscription_id)
        .where(CreditNote.kind.in_(("cancellation", "plan_change"))).order_by(CreditNote.id)).all()
    seen: dict[tuple, int] = {}
    for note in notes:
        event = (note.subscription_id, note.kind, note.issue_date if note.kind == "plan_change" else None)
        if event in seen:
            out.append(Mismatch("credit_note", note.id, note.customer_id,
                                f"a second {note.kind} credit for one event", 1, f"credit note #{seen[event]}"))
            continue
        seen[event] = note.id
        day = note.end_date if note.kind == "cancellation" else note.issue_date
        if day is None:
            out.append(Mismatch("credit_note", note.id, note.customer_id,
                                "cancellation credit for a subscription that is not cancelled", note.subtotal_cents, 0))
            continue
        worth = unused_credit(note.subscription_id, day, note.kind == "cancellation", as_of=note.created_at)
        if worth.subtotal_cents != note.subtotal_cents:
            out.append(Mismatch("credit_note", note.id, note.customer_id, "credit differs from the unused days",
                                note.subtotal_cents, worth.subtotal_cents))
    return out


def _ledger_mismatches() -> list[Mismatch]:
    """Per customer: invoiced − received − credited must equal owed − unapplied credit."""
    invoiced = _sums(Invoice, Invoice.customer_id, Invoice.total_cents, Invoice.status != "draft")
    received = _sums(Payment, Payment.customer_id, Payment.amount_cents, Payment.status == "completed")
    credited = _sums(CreditNote, CreditNote.customer_id, CreditNote.amount_cents)
    owed = _sums(Invoice, Invoice.customer_id, Invoice.balance_cents, Invoice.status.in_((*OPEN_STATUSES, "paid")))
    alloc_pay = dict(db.session.execute(
        select(Payment.customer_id, func.sum(PaymentAllocation.amount_cents))
        .join(Payment, Payment.id == PaymentAllocation.payment_id)
        .where(PaymentAllocation.reversed_at.is_(None), Payment.status == "completed")
        .group_by(Payment.customer_id)).all())
    alloc_credit = dict(db.session.execute(
        select(CreditNote.customer_id, func.sum(CreditAllocation.amount_cents))
        .join(CreditNote, CreditNote.id == CreditAllocation.credit_note_id)
        .where(CreditAllocation.reversed_at.is_(None)).group_by(CreditNote.customer_id)).all())
    out = []
    for customer_id in set(invoiced) | set(received) | set(credited):
        ledger = invoiced.get(customer_id, 0) - received.get(customer_id, 0) - credited.get(customer_id, 0)
        unapplied = (received.get(customer_id, 0) - alloc_pay.get(customer_id, 0)) + \
                    (credited.get(customer_id, 0) - alloc_credit.get(customer_id, 0))
        position = owed.get(customer_id, 0) - unapplied
        if ledger != position:
            out.append(Mismatch("customer", customer_id, customer_id, "ledger differs from open balances",
                                ledger, position))
    return out

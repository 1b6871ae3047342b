"""Invoices outside the monthly run: drafts, issuing, voiding with a credit note, credits for unused days."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TypeVar

from flask import current_app
from sqlalchemy import or_, select

from isp_admin.errors import BusinessRuleViolation, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import CreditAllocation, CreditNote, Invoice, InvoiceLine, PaymentAllocation, Plan, Subscription
from isp_admin.models.base import utcnow
from isp_admin.services.billing.calendar import prorate, tax_on
from isp_admin.services.billing.ledger import (
    apply_available_credit,
    lock_and_load,
    lock_customer,
    reactivate_if_paid,
    settle,
)
from isp_admin.services.billing.numbering import allocate_numbers
from isp_admin.services.platform import audit
from isp_admin.services.platform.bounds import MAX_LINES, check_service_dates, check_text

T = TypeVar("T")


def get_invoice(invoice_id: int) -> Invoice:
    """Return an invoice by id or raise NotFound."""
    invoice = db.session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFound("No such invoice.")
    return invoice


def _locked(invoice_id: int) -> Invoice:
    """The invoice, read fresh under its customer's lock (every write here starts with this)."""
    return lock_and_load(Invoice, invoice_id, "No such invoice.")


def _validate_lines(lines: list[dict]) -> list[dict]:
    if not lines:
        raise Invalid("An invoice needs at least one line.", {"lines": "Add a line."})
    if len(lines) > MAX_LINES:
        raise Invalid(f"An invoice has at most {MAX_LINES} lines.", {"lines": f"At most {MAX_LINES}."})
    clean, errors = [], {}
    for index, line in enumerate(lines):
        description = (line.get("description") or "").strip()
        quantity, unit, rate = line.get("quantity", 1), line.get("unit_price_cents"), line.get("tax_rate_bp", 0)
        if not description or len(description) > 255:
            errors[f"lines.{index}.description"] = "1 to 255 characters."
        if not isinstance(quantity, int) or not 0 < quantity <= 10_000:
            errors[f"lines.{index}.quantity"] = "A whole number from 1 to 10000."
        if not isinstance(unit, int) or not 0 <= unit <= 10**10:
            errors[f"lines.{index}.unit_price_cents"] = "Zero or more cents."
        if not isinstance(rate, int) or not 0 <= rate <= 10000:
            errors[f"lines.{index}.tax_rate_bp"] = "0 to 10000 basis points."
        if not errors:
            amount = quantity * unit
            clean.append(dict(kind="adjustment", description=description, quantity=quantity,
                              unit_price_cents=unit, amount_cents=amount, tax_rate_bp=rate,
                              tax_cents=tax_on(amount, rate)))
    if errors:
        raise Invalid("Please correct the invoice lines.", errors)
    return clean


def _fill_totals(invoice: Invoice, lines: list[dict]) -> None:
    invoice.subtotal_cents = sum(line["amount_cents"] for line in lines)
    invoice.tax_cents = sum(line["tax_cents"] for line in lines)
    invoice.total_cents = invoice.subtotal_cents + invoice.tax_cents


def create_draft(customer_id: int, lines: list[dict], issue_date: date) -> Invoice:
    """Create a draft invoice of ad hoc lines (no number until issued)."""
    check_service_dates(issue_date, issue_date=issue_date)
    customer = lock_customer(customer_id)
    clean = _validate_lines(lines)
    invoice = Invoice(customer_id=customer.id, status="draft", issue_date=issue_date,
                      due_date=issue_date + timedelta(days=current_app.config["PAYMENT_TERMS_DAYS"]),
                      currency=current_app.config["CURRENCY"])
    _fill_totals(invoice, clean)
    db.session.add(invoice)
    db.session.flush()
    for line in clean:
        db.session.add(InvoiceLine(invoice_id=invoice.id, **line))
    audit.record("invoice.create_draft", invoice, after={"total_cents": invoice.total_cents},
                 customer_id=customer.id)
    return invoice


def replace_draft_lines(invoice_id: int, lines: list[dict]) -> Invoice:
    """Replace a draft's lines; issued invoices are never edited."""
    clean = _validate_lines(lines)
    invoice = _locked(invoice_id)
    if invoice.status != "draft":
        raise BusinessRuleViolation("An issued invoice is never edited; void it and issue a new one.")
    before = {"total_cents": invoice.total_cents}
    for line in db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id)):
        db.session.delete(line)
    for line in clean:
        db.session.add(InvoiceLine(invoice_id=invoice.id, **line))
    _fill_totals(invoice, clean)
    db.session.flush()
    audit.record("invoice.update_draft", invoice, before=before, after={"total_cents": invoice.total_cents},
                 customer_id=invoice.customer_id)
    return invoice


def delete_draft(invoice_id: int, describe: Callable[[int], T] | None = None) -> T | None:
    """Delete a draft; an issued invoice is refused (void it instead).

    `describe(invoice_id)` runs under the lock just before the delete, so an answer that shows the deleted draft
    shows it as it was deleted, not as read before a concurrent edit replaced its lines.
    """
    invoice = _locked(invoice_id)
    if invoice.status != "draft":
        raise BusinessRuleViolation("Issued invoices are never deleted; void it instead.")
    described = describe(invoice_id) if describe else None
    audit.record("invoice.delete_draft", invoice, before={"total_cents": invoice.total_cents},
                 customer_id=invoice.customer_id)
    for line in db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id)):
        db.session.delete(line)
    db.session.delete(invoice)
    db.session.flush()
    return described


def issue(invoice_id: int, today: date) -> Invoice:
    """Issue a draft: number it (gapless), date it, apply the customer's credit."""
    invoice = _locked(invoice_id)
    if invoice.status != "draft":
        raise BusinessRuleViolation("This invoice is already issued.")
    invoice.issue_date = today
    invoice.due_date = today + timedelta(days=current_app.config["PAYMENT_TERMS_DAYS"])
    invoice.number = allocate_numbers("INV", today.year, 1)[0]
    invoice.status = "open"
    db.session.flush()
    audit.record("invoice.issue", invoice, after={"number": invoice.number, "total_cents": invoice.total_cents},
                 customer_id=invoice.customer_id)
    from isp_admin.services.messaging.notifications import queue_notification

    queue_notification(invoice.customer_id, "invoice", invoice.id, f"Invoice {invoice.number}")
    apply_available_credit(invoice.customer_id, today)
    settle(invoice, today)  # a zero invoice owes nothing: paid at issue, never left open
    from isp_admin.services.reporting.reports import invalidate_reports

    invalidate_reports()
    return invoice


def _credit_note(customer_id: int, kind: str, reason: str, subtotal: int, tax: int, today: date,
                 invoice_id: int | None = None, subscription_id: int | None = None) -> CreditNote:
    note = CreditNote(number=allocate_numbers("CN", today.year, 1)[0], customer_id=customer_id,
                      invoice_id=invoice_id, subscription_id=subscription_id, kind=kind, reason=reason,
                      issue_date=today, currency=current_app.config["CURRENCY"], subtotal_cents=subtotal,
                      tax_cents=tax, amount_cents=subtotal + tax)
    db.session.add(note)
    db.session.flush()
    audit.record(f"credit_note.{kind}", note, after={"number": note.number, "amount_cents": note.amount_cents,
                                                      "invoice_id": invoice_id}, customer_id=customer_id)
    return note


def void(invoice_id: int, reason: str, today: date) -> CreditNote:
    """Void an issued invoice: a credit note cancels it and money already applied becomes customer credit."""
    if not (reason or "").strip():
        raise Invalid("Say why the invoice is void.", {"reason": "Required."})
    check_text("reason", reason)
    invoice = _locked(invoice_id)
    if invoice.status == "draft":
        raise BusinessRuleViolation("A draft has nothing to void; delete it instead.")
    if invoice.status == "void":
        raise BusinessRuleViolation("This invoice is already void.")
    if invoice.total_cents == 0:
        raise BusinessRuleViolation("This invoice is for nothing; there is nothing to void.")
    now = utcnow()
    for allocation in db.session.scalars(select(PaymentAllocation).where(
            PaymentAllocation.invoice_id == invoice.id, PaymentAllocation.reversed_at.is_(None))):
        allocation.reversed_at = now
    for allocation in db.session.scalars(select(CreditAllocation).where(
            CreditAllocation.invoice_id == invoice.id, CreditAllocation.reversed_at.is_(None))):
        allocation.reversed_at = now
    before = {"status": invoice.status, "amount_paid_cents": invoice.amount_paid_cents,
              "credit_applied_cents": invoice.credit_applied_cents}
    note = _credit_note(invoice.customer_id, "void", f"Void of {invoice.number}: {reason.strip()}",
                        invoice.subtotal_cents, invoice.tax_cents, today, invoice_id=invoice.id)
    # The void credit note settles the voided invoice itself, so the ledger stays uniform.
    db.session.add(CreditAllocation(credit_note_id=note.id, invoice_id=invoice.id, amount_cents=invoice.total_cents))
    invoice.amount_paid_cents = 0
    invoice.credit_applied_cents = invoice.total_cents
    invoice.status, invoice.voided_at, invoice.void_reason, invoice.paid_at = "void", now, reason.strip(), None
    db.session.flush()
    audit.record("invoice.void", invoice, before=before, after={"status": "void", "reason": reason.strip()},
                 customer_id=invoice.customer_id)
    apply_available_credit(invoice.customer_id, today)
    reactivate_if_paid(invoice.customer_id, today)
    from isp_admin.services.reporting.reports import invalidate_reports

    invalidate_reports()
    return note


PERIOD_KINDS = ("subscription", "plan_change")
# Lines that price a subscription's days: its periods, plan changes, and re-billings of a voided invoice's periods
# (adjustments that carry a period: services/billing/rebill.py).
PRICES_DAYS = or_(InvoiceLine.kind.in_(PERIOD_KINDS),
                  (InvoiceLine.kind == "adjustment") & InvoiceLine.period_start.is_not(None))


def _live_period_lines(subscription_id: int, after: date, as_of: datetime | None = None) -> list[InvoiceLine]:
    """Period lines ending after `after` on invoices not void; with `as_of`, as the books stood at that moment."""
    if as_of is None:
        standing = Invoice.status != "void"
    else:  # reconcile re-prices a credit note against the invoices that existed, and were not void, when it was made
        standing = (Invoice.created_at < as_of) & (Invoice.voided_at.is_(None) | (Invoice.voided_at >= as_of))
    return list(db.session.scalars(
        select(InvoiceLine).join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(InvoiceLine.subscription_id == subscription_id, PRICES_DAYS,
               InvoiceLine.period_end > after, standing)
        .order_by(InvoiceLine.period_start, InvoiceLine.id)))


def plan_changed_on(subscription_id: int, day: date) -> bool:
    """Whether a plan change already charged this subscription on `day` (at most one a day, by the key)."""
    return db.session.scalar(select(InvoiceLine.id).where(
        InvoiceLine.subscription_id == subscription_id, InvoiceLine.kind == "plan_change",
        InvoiceLine.period_start == day).limit(1)) is not None


def billed_line_covering(subscription_id: int, day: date) -> InvoiceLine | None:
    """Return the line that prices `day`: the latest-starting live period or plan-change line covering it."""
    covering = [line for line in _live_period_lines(subscription_id, day) if line.period_start <= day]
    return covering[-1] if covering else None


def _unused_segments(subscription_id: int, day: date, later_periods: bool,
                     as_of: datetime | None = None) -> list[tuple[InvoiceLine, int]]:
    """Return (line, days) for every billed day from `day` on, each day priced by the line in force then.

    A plan change starts a new line inside a period; the older line stops pricing days from that point.
    Without `later_periods`, only the period containing `day` counts.
    """
    lines = _live_period_lines(subscription_id, day, as_of)
    if not later_periods:
        covering = [line for line in lines if line.period_start <= day]
        if not covering:
            return []
        end = max(line.period_end for line in covering)
        lines = [line for line in lines if line.period_start < end]
    segments = []
    # Lines come in (period_start, id) order; each later line beginning inside an earlier one takes over its days
    # from that point, including one beginning the same day (a plan change on a period's first day).
    for index, line in enumerate(lines):
        next_change = min((other.period_start for other in lines[index + 1:]
                           if other.period_start < line.period_end), default=line.period_end)
        days = (next_change - max(day, line.period_start)).days
        if days > 0:
            segments.append((line, days))
    return segments


@dataclass
class UnusedCredit:
    """What the unused days from a day on are worth: the credit a cancellation or plan change gives back."""

    subtotal_cents: int
    tax_cents: int
    days: int
    last_day: date | None


def unused_credit(subscription_id: int, day: date, later_periods: bool,
                  as_of: datetime | None = None) -> UnusedCredit:
    """Price the billed days from `day` on (see _unused_segments); `as_of` prices them as the books then stood."""
    subtotal = tax = unused = 0
    segments = _unused_segments(subscription_id, day, later_periods, as_of)
    for line, days in segments:
        amount = min(line.amount_cents, prorate(line.unit_price_cents, days, line.period_days))
        subtotal, tax, unused = subtotal + amount, tax + tax_on(amount, line.tax_rate_bp), unused + days
    last = max((line.period_end for line, _ in segments), default=None)
    return UnusedCredit(subtotal, tax, unused, last)


def _with_login(plan_name: str, pppoe_username: str | None) -> str:
    return f"{plan_name} · {pppoe_username}" if pppoe_username else plan_name


def service_label(sub: Subscription) -> str:
    """Name a subscription as staff and customers know it, on documents: its plan and its PPPoE login."""
    return _with_login(db.session.get(Plan, sub.plan_id).name, sub.pppoe_username)


def credit_unused_days(sub: Subscription, day: date, kind: str, today: date,
                       later_periods: bool = False) -> CreditNote | None:
    """Credit the unused days [day, period end) of the billed period containing `day` (cancel, plan change);
    with `later_periods`, every period billed after `day` too (a back-dated cancellation)."""
    unused = unused_credit(sub.id, day, later_periods)
    if unused.subtotal_cents <= 0:
        return None
    note = _credit_note(sub.customer_id, kind,
                        f"Unused {unused.days} days, {day:%d %b %Y} – {unused.last_day - timedelta(days=1):%d %b %Y} "
                        f"({service_label(sub)})", unused.subtotal_cents, unused.tax_cents, today,
                        subscription_id=sub.id)
    apply_available_credit(sub.customer_id, today)
    reactivate_if_paid(sub.customer_id, today)
    from isp_admin.services.reporting.reports import invalidate_reports

    invalidate_reports()
    return note


def charge_rest_of_period(sub: Subscription, day: date, price_cents: int, tax_rate_bp: int, plan_name: str,
                          today: date) -> Invoice | None:
    """Invoice [day, period end) at a new price after a plan change, when that period was already billed."""
    line = billed_line_covering(sub.id, day)
    if line is None:
        return None  # the period is not billed yet: the next run bills it at the new price
    days = (line.period_end - day).days
    amount = prorate(price_cents, days, line.period_days)
    invoice = Invoice(customer_id=sub.customer_id, status="draft", issue_date=today, due_date=today,
                      currency=current_app.config["CURRENCY"])
    db.session.add(invoice)
    db.session.flush()
    # Linked to the subscription so later credits price these days at the new plan; the period key
    # (subscription lines only) does not apply to this one-off difference.
    db.session.add(InvoiceLine(
        invoice_id=invoice.id, subscription_id=sub.id, kind="plan_change",
        description=f"{_with_login(plan_name, sub.pppoe_username)}, {day:%d %b %Y} – "
                    f"{line.period_end - timedelta(days=1):%d %b %Y} ({days}/{line.period_days} days, plan change)",
        period_start=day, period_end=line.period_end, days=days, period_days=line.period_days, quantity=1,
        unit_price_cents=price_cents, amount_cents=amount, tax_rate_bp=tax_rate_bp,
        tax_cents=tax_on(amount, tax_rate_bp)))
    _fill_totals(invoice, [{"amount_cents": amount, "tax_cents": tax_on(amount, tax_rate_bp)}])
    db.session.flush()
    return issue(invoice.id, today)

"""Invoices outside the monthly run: drafts, issuing, voiding with a credit note, credits for unused days."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TypeVar

from flask import current_app
from sqlalchemy import func, or_, select, true

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


@dataclass
class EarlierCredit:
    """Part of an unused-days credit note (a cancellation or plan change) that gave back days an invoice prices."""

    note: CreditNote
    subtotal_cents: int
    tax_cents: int

    @property
    def amount_cents(self) -> int:
        """The part, tax included."""
        return self.subtotal_cents + self.tax_cents


@dataclass
class VoidPlan:
    """What voiding an invoice credits: its total less the days earlier credit notes already gave back."""

    invoice: Invoice
    earlier: list[EarlierCredit]

    @property
    def subtotal_cents(self) -> int:
        """The void credit note's subtotal."""
        return self.invoice.subtotal_cents - sum(e.subtotal_cents for e in self.earlier)

    @property
    def tax_cents(self) -> int:
        """The void credit note's tax."""
        return self.invoice.tax_cents - sum(e.tax_cents for e in self.earlier)

    @property
    def credit_cents(self) -> int:
        """The void credit note's amount, tax included."""
        return self.subtotal_cents + self.tax_cents


def credited_earlier(invoice: Invoice) -> list[EarlierCredit]:
    """The cancellation and plan-change credit notes that already gave back days this invoice prices, each with
    the part that priced this invoice's lines (re-priced as the books stood when the note was made)."""
    sub_ids = select(InvoiceLine.subscription_id).where(InvoiceLine.invoice_id == invoice.id, PRICES_DAYS)
    notes = db.session.execute(
        select(CreditNote, Subscription.end_date).join(Subscription, Subscription.id == CreditNote.subscription_id)
        .where(CreditNote.subscription_id.in_(sub_ids), CreditNote.kind.in_(UNUSED_DAYS_KINDS))
        .order_by(CreditNote.id)).all()
    out = []
    for note, end_date in notes:
        day = end_date if note.kind == "cancellation" else note.issue_date
        if day is None:
            continue
        subtotal = tax = 0
        for line, days in _unused_segments(note.subscription_id, day, note.kind == "cancellation", note.created_at):
            if line.invoice_id == invoice.id:
                amount, line_tax = _segment_value(line, days)
                subtotal, tax = subtotal + amount, tax + line_tax
        if subtotal or tax:
            out.append(EarlierCredit(note, subtotal, tax))
    return out


def plan_void(invoice: Invoice) -> VoidPlan:
    """Return what voiding this issued invoice would credit; nothing is written."""
    return VoidPlan(invoice, credited_earlier(invoice))


def _take_back(earlier: EarlierCredit, today: date) -> None:
    """Free `earlier.amount_cents` of a credit note applied elsewhere (newest allocation first); those invoices
    reopen, as after a payment reversal."""
    applied = db.session.scalar(select(func.coalesce(func.sum(CreditAllocation.amount_cents), 0)).where(
        CreditAllocation.credit_note_id == earlier.note.id, CreditAllocation.reversed_at.is_(None)))
    short = earlier.amount_cents - (earlier.note.amount_cents - int(applied))
    allocations = db.session.scalars(select(CreditAllocation).where(
        CreditAllocation.credit_note_id == earlier.note.id, CreditAllocation.reversed_at.is_(None))
        .order_by(CreditAllocation.id.desc()))
    now = utcnow()
    for allocation in allocations:
        if short <= 0:
            break
        other = db.session.get(Invoice, allocation.invoice_id)
        take = min(short, allocation.amount_cents)
        allocation.reversed_at = now
        if take < allocation.amount_cents:  # keep the rest where it was
            db.session.add(CreditAllocation(credit_note_id=allocation.credit_note_id, invoice_id=other.id,
                                            amount_cents=allocation.amount_cents - take))
        other.credit_applied_cents -= take
        short -= take
        settle(other, today)


def void(invoice_id: int, reason: str, today: date) -> CreditNote:
    """Void an issued invoice: a credit note cancels it and money already applied becomes customer credit.

    Days a cancellation or plan change already credited are not credited again: those credit notes' parts settle
    the voided invoice, and the void's credit note is for the rest.
    """
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
    plan = plan_void(invoice)
    if plan.credit_cents <= 0 or plan.subtotal_cents < 0 or plan.tax_cents < 0:
        numbers = ", ".join(e.note.number for e in plan.earlier)
        raise BusinessRuleViolation(f"Every day this invoice bills was already credited ({numbers}); voiding it "
                                    "would credit them twice.")
    now = utcnow()
    for allocation in db.session.scalars(select(PaymentAllocation).where(
            PaymentAllocation.invoice_id == invoice.id, PaymentAllocation.reversed_at.is_(None))):
        allocation.reversed_at = now
    for allocation in db.session.scalars(select(CreditAllocation).where(
            CreditAllocation.invoice_id == invoice.id, CreditAllocation.reversed_at.is_(None))):
        allocation.reversed_at = now
    db.session.flush()
    before = {"status": invoice.status, "amount_paid_cents": invoice.amount_paid_cents,
              "credit_applied_cents": invoice.credit_applied_cents}
    less = "".join(f" (less {e.note.number}, which already credited part of it)" for e in plan.earlier)
    note = _credit_note(invoice.customer_id, "void", f"Void of {invoice.number}: {reason.strip()}{less}",
                        plan.subtotal_cents, plan.tax_cents, today, invoice_id=invoice.id)
    # The void credit note, with the earlier credit notes' parts for these days, settles the voided invoice
    # itself, so the ledger stays uniform.
    db.session.add(CreditAllocation(credit_note_id=note.id, invoice_id=invoice.id, amount_cents=note.amount_cents))
    for earlier in plan.earlier:
        _take_back(earlier, today)
        db.session.add(CreditAllocation(credit_note_id=earlier.note.id, invoice_id=invoice.id,
                                        amount_cents=earlier.amount_cents))
    invoice.amount_paid_cents = 0
    invoice.credit_applied_cents = invoice.total_cents
    invoice.status, invoice.voided_at, invoice.void_reason, invoice.paid_at = "void", now, reason.strip(), None
    db.session.flush()
    audit.record("invoice.void", invoice, before=before,
                 after={"status": "void", "reason": reason.strip(), "credit_note": note.number,
                        "already_credited": {e.note.number: e.amount_cents for e in plan.earlier}},
                 customer_id=invoice.customer_id)
    apply_available_credit(invoice.customer_id, today)
    reactivate_if_paid(invoice.customer_id, today)
    from isp_admin.services.reporting.reports import invalidate_reports

    invalidate_reports()
    return note


PERIOD_KINDS = ("subscription", "plan_change")
UNUSED_DAYS_KINDS = ("cancellation", "plan_change")
# Lines that price a subscription's days: its periods, plan changes, and re-billings of a voided invoice's periods
# (adjustments that carry a period: services/billing/rebill.py).
PRICES_DAYS = or_(InvoiceLine.kind.in_(PERIOD_KINDS),
                  (InvoiceLine.kind == "adjustment") & InvoiceLine.period_start.is_not(None))


def _live_period_lines(subscription_id: int, after: date) -> list[InvoiceLine]:
    """Period lines ending after `after` on invoices not void."""
    return [line for line, live in _priced_lines(subscription_id, after, None) if live]


def plan_changed_on(subscription_id: int, day: date) -> bool:
    """Whether a plan change already charged this subscription on `day` (at most one a day, by the key)."""
    return db.session.scalar(select(InvoiceLine.id).where(
        InvoiceLine.subscription_id == subscription_id, InvoiceLine.kind == "plan_change",
        InvoiceLine.period_start == day).limit(1)) is not None


def billed_line_covering(subscription_id: int, day: date) -> InvoiceLine | None:
    """Return the line that prices `day`: the latest-starting live period or plan-change line covering it."""
    covering = [line for line in _live_period_lines(subscription_id, day) if line.period_start <= day]
    return covering[-1] if covering else None


def _priced_lines(subscription_id: int, after: date, as_of: datetime | None) -> list[tuple[InvoiceLine, bool]]:
    """Period lines ending after `after`, void ones too, each with whether its invoice stands (as of `as_of`)."""
    if as_of is None:
        made, standing = true(), Invoice.status != "void"
    else:
        made = Invoice.created_at < as_of
        standing = Invoice.voided_at.is_(None) | (Invoice.voided_at >= as_of)
    return [(line, bool(live)) for line, live in db.session.execute(
        select(InvoiceLine, standing).join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(InvoiceLine.subscription_id == subscription_id, PRICES_DAYS, InvoiceLine.period_end > after, made)
        .order_by(InvoiceLine.period_start, InvoiceLine.id))]


def _unused_segments(subscription_id: int, day: date, later_periods: bool,
                     as_of: datetime | None = None) -> list[tuple[InvoiceLine, int]]:
    """Return (line, days) for every billed day from `day` on, each day priced by the line in force then.

    A plan change starts a new line inside a period; the older line stops pricing days from that point.
    A void invoice's line does too but prices nothing: the older line's days from there were credited when the
    plan changed, and the void cancelled the new price, so nothing of those days is left to credit.
    Without `later_periods`, only the period containing `day` counts.
    """
    lines = _priced_lines(subscription_id, day, as_of)
    if not later_periods:
        covering = [line for line, live in lines if live and line.period_start <= day]
        if not covering:
            return []
        end = max(line.period_end for line in covering)
        lines = [(line, live) for line, live in lines if line.period_start < end]
    segments = []
    # Lines come in (period_start, id) order; each later line beginning inside an earlier one takes over its days
    # from that point, including one beginning the same day (a plan change on a period's first day).
    for index, (line, live) in enumerate(lines):
        next_change = min((other.period_start for other, _ in lines[index + 1:]
                           if other.period_start < line.period_end), default=line.period_end)
        days = (next_change - max(day, line.period_start)).days
        if live and days > 0:
            segments.append((line, days))
    return segments


def _segment_value(line: InvoiceLine, days: int) -> tuple[int, int]:
    """What `days` of a line are worth back: (amount, tax), never more than the line charged."""
    amount = min(line.amount_cents, prorate(line.unit_price_cents, days, line.period_days))
    return amount, tax_on(amount, line.tax_rate_bp)


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
        amount, line_tax = _segment_value(line, days)
        subtotal, tax, unused = subtotal + amount, tax + line_tax, unused + days
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

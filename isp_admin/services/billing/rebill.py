"""Void and re-bill: a wrong invoice is voided and its subscriptions' periods are billed again, at today's prices.

Voiding alone does not make a period due again: the run bills a period once (UNIQUE(subscription_id, period_start,
kind) on lines, and a voided invoice keeps its lines), and coverage counts a voided invoice's periods as billed and
credited. So "Generate invoice now" finds nothing after a void; re-billing is this explicit step instead, offered on
the void form with its amounts. The new lines are of kind 'adjustment' and carry the subscription and the period,
so a later cancellation or plan change credits their unused days (invoices._priced_lines counts them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import BusinessRuleViolation
from isp_admin.extensions import db
from isp_admin.models import CreditNote, Invoice, InvoiceLine, Plan, Subscription
from isp_admin.services.billing.calendar import prorate, tax_on
from isp_admin.services.billing.invoices import PERIOD_KINDS, get_invoice, issue, void
from isp_admin.services.billing.run import PlannedLine
from isp_admin.services.platform import audit

# A re-billing line is what a run would write for the same period: one shape for both.
RebillLine = PlannedLine


@dataclass
class RebillPlan:
    """What re-billing a voided invoice would issue, what it leaves out (and why), or why it cannot."""

    lines: list[RebillLine] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    refusal: str | None = None

    @property
    def total_cents(self) -> int:
        """The re-billing invoice's total, tax included."""
        return sum(line.amount_cents + line.tax_cents for line in self.lines)

    @property
    def possible(self) -> bool:
        """Whether there is something to re-bill and nothing stands in the way."""
        return self.refusal is None and bool(self.lines)


def _period(start: date, end: date, days: int | None, period_days: int | None) -> str:
    label = f"{start:%d %b %Y} – {end - timedelta(days=1):%d %b %Y}"
    return label if days == period_days else f"{label} ({days}/{period_days} days)"


def plan_rebill(invoice_id: int) -> RebillPlan:
    """Return the invoice that would re-bill this invoice's subscription periods (and setup fees) at each
    subscription's current price and tax rate; nothing is written."""
    invoice = get_invoice(invoice_id)
    lines = list(db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id)
                                    .order_by(InvoiceLine.id)))
    sub_ids = {line.subscription_id for line in lines if line.subscription_id is not None}
    subs = {sub.id: (sub, plan) for sub, plan in db.session.execute(
        select(Subscription, Plan).join(Plan, Plan.id == Subscription.plan_id).where(Subscription.id.in_(sub_ids)))
    } if sub_ids else {}
    others = _other_period_lines(invoice.id, sub_ids)
    out = RebillPlan()
    for line in lines:
        if line.subscription_id is None:
            out.left_out.append(f"{line.description}: not a subscription's charge (write a draft if still owed)")
            continue
        sub, plan = subs[line.subscription_id]
        if sub.status == "cancelled":
            out.left_out.append(f"{line.description}: the subscription is cancelled")
        elif line.kind == "setup_fee":
            _setup_fee(out, line, sub, plan)
        elif line.period_start is None or line.period_end is None:
            out.left_out.append(f"{line.description}: no period to re-bill")
        else:
            _period_line(out, invoice.number, line, sub, plan, others)
    return out


def _period_line(out: RebillPlan, number: str, line: InvoiceLine, sub: Subscription, plan: Plan,
                 others: list[InvoiceLine]) -> None:
    """Re-bill one period line at the subscription's price now, unless that would bill a day twice."""
    period = _period(line.period_start, line.period_end, line.days, line.period_days)
    if line.kind not in PERIOD_KINDS:
        out.refusal = (f"{line.description} was itself a re-billing, and a period is re-billed once. "
                       "Void this invoice only, then write a draft.")
        return
    clash = next((o for o in others if o.subscription_id == sub.id and o.period_start < line.period_end
                  and line.period_start < o.period_end), None)
    if clash is not None:
        out.refusal = (f"Another invoice already bills part of {period} ({clash.description}): re-billing would "
                       "charge those days twice. Void this invoice only, then write a draft for what is still owed.")
        return
    service = f"{plan.name} · {sub.pppoe_username}" if sub.pppoe_username else plan.name
    price = plan.monthly_price_cents if sub.price_override_cents is None else sub.price_override_cents
    amount = prorate(price, line.days, line.period_days) if line.days and line.period_days else price
    tax = tax_on(amount, plan.tax_rate_bp)
    out.lines.append(RebillLine(
        sub.id, "adjustment", f"{service}, {period} (re-billed, replaces {number})"[:255], line.period_start,
        line.period_end, line.days, line.period_days, price, amount, plan.tax_rate_bp, tax))


def _setup_fee(out: RebillPlan, line: InvoiceLine, sub: Subscription, plan: Plan) -> None:
    if not plan.setup_fee_cents:
        out.left_out.append(f"{line.description}: the plan has no setup fee now")
        return
    fee = plan.setup_fee_cents
    out.lines.append(RebillLine(sub.id, "setup_fee", f"Setup fee: {plan.name}", None, None, None, None, fee, fee,
                                plan.tax_rate_bp, tax_on(fee, plan.tax_rate_bp)))


def _other_period_lines(invoice_id: int, sub_ids: set[int]) -> list[InvoiceLine]:
    """Period lines of these subscriptions on other invoices that stand (not void): what a re-billing must not
    overlap. Re-billing lines (adjustments with a period) count too."""
    if not sub_ids:
        return []
    return list(db.session.scalars(
        select(InvoiceLine).join(Invoice, Invoice.id == InvoiceLine.invoice_id)
        .where(InvoiceLine.subscription_id.in_(sub_ids), InvoiceLine.invoice_id != invoice_id,
               InvoiceLine.period_start.is_not(None), InvoiceLine.kind != "setup_fee", Invoice.status != "void")))


def void_and_rebill(invoice_id: int, reason: str, today: date) -> tuple[CreditNote, Invoice]:
    """Void an invoice (a credit note cancels it) and issue a new one for its periods at today's prices."""
    note = void(invoice_id, reason, today)  # takes the customer's lock; the plan below reads under it
    plan = plan_rebill(invoice_id)
    if plan.refusal:
        raise BusinessRuleViolation(plan.refusal)
    if not plan.lines:
        raise BusinessRuleViolation("Nothing on this invoice can be re-billed: " + "; ".join(plan.left_out)
                                    + ". Void it only.")
    voided = get_invoice(invoice_id)
    invoice = Invoice(customer_id=voided.customer_id, status="draft", issue_date=today, due_date=today,
                      currency=current_app.config["CURRENCY"], subtotal_cents=sum(x.amount_cents for x in plan.lines),
                      tax_cents=sum(x.tax_cents for x in plan.lines))
    invoice.total_cents = invoice.subtotal_cents + invoice.tax_cents
    db.session.add(invoice)
    db.session.flush()
    for line in plan.lines:
        db.session.add(InvoiceLine(invoice_id=invoice.id, quantity=1, **vars(line)))
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError:  # a period re-billed once already (the lines' unique key): refused, not a 500
        raise BusinessRuleViolation("A period of this invoice was already re-billed once; void it only, then "
                                    "write a draft.") from None
    audit.record("invoice.rebill", invoice, after={"replaces": voided.number, "total_cents": invoice.total_cents},
                 customer_id=invoice.customer_id)
    return note, issue(invoice.id, today)

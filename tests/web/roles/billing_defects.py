"""Role cells for money-moving subscription changes and void-and-re-bill (issue 16's billing defects).

The matrix's own change-plan and cancel cells use a subscription whose period is not billed: those changes issue no
money documents, so support may make them. Here the subscription's current period is billed: a plan change issues
an invoice and a credit note, which only billing staff may do; a cancellation issues a credit note (support may).
The confirming posts carry the amounts the preview showed, computed here by the same preview.
"""
from __future__ import annotations

from datetime import date

from isp_admin.extensions import db
from isp_admin.models import Invoice, InvoiceLine, Plan, Subscription
from isp_admin.services.billing.calendar import tax_on
from isp_admin.services.customers.subscriptions import preview_cancel, preview_change_plan
from isp_admin.services.platform.clock import today
from tests.web.roles import EDITORS, PLANNERS, Route

ROUTES = [
    Route("POST", "/subscriptions/<billed_subscription>/change-plan", PLANNERS,
          {"plan_id": "<second_plan>", "confirm": "1", "amounts": "<billed_change_amounts>"},
          audit="subscription.change_plan"),
    Route("POST", "/subscriptions/<billed_subscription>/cancel", EDITORS,
          {"end_date": "<today>", "confirm": "1", "amounts": "<billed_cancel_amounts>"}, audit="subscription.cancel"),
    Route("POST", "/invoices/<billed_invoice>/void", PLANNERS, {"reason": "Wrong price", "then": "rebill"},
          audit="invoice.rebill"),
]


def records(world: dict) -> dict:
    """A subscription on the world's plan whose current month is billed on an open invoice (rows written directly,
    as billing_world does, to keep the matrix's cells cheap), and the amounts its plan change and cancellation
    would issue."""
    plan = db.session.get(Plan, world["plan"])
    day = today()
    start = day.replace(day=1)
    end = date(start.year + start.month // 12, start.month % 12 + 1, 1)
    sub = Subscription(customer_id=world["customer"], plan_id=plan.id, status="active", start_date=start,
                       billing_day=1, next_bill_date=end, billed_from=start, pppoe_username="billed.matrix")
    db.session.add(sub)
    db.session.flush()
    price, tax = plan.monthly_price_cents, tax_on(plan.monthly_price_cents, plan.tax_rate_bp)
    invoice = Invoice(number="INV-2025-000099", customer_id=world["customer"], status="open", issue_date=start,
                      due_date=start, currency=plan.currency, subtotal_cents=price, tax_cents=tax,
                      total_cents=price + tax)
    db.session.add(invoice)
    db.session.flush()
    days = (end - start).days
    db.session.add(InvoiceLine(invoice_id=invoice.id, subscription_id=sub.id, kind="subscription",
                               description=f"{plan.name} · billed.matrix", period_start=start, period_end=end,
                               days=days, period_days=days, quantity=1, unit_price_cents=price, amount_cents=price,
                               tax_rate_bp=plan.tax_rate_bp, tax_cents=tax))
    db.session.commit()
    change = preview_change_plan(sub.id, world["second_plan"]).amounts
    cancel = preview_cancel(sub.id, day).amounts
    db.session.rollback()
    return {"billed_subscription": sub.id, "billed_invoice": invoice.id, "billed_change_amounts": change,
            "billed_cancel_amounts": cancel, "today": day.isoformat()}

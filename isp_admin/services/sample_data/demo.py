"""A believable billing history for the demo (`make run`): two past runs, payments, some debt."""
from __future__ import annotations

import random
from datetime import date, timedelta

from sqlalchemy import select, text

from isp_admin.extensions import db
from isp_admin.models import Invoice
from isp_admin.services.billing import collections, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.calendar import bill_date_on_or_before


def bill_history(today: date, seed: int = 42) -> dict:
    """Bill the demo's live subscriptions from two months back, pay most invoices, leave some overdue."""
    rng = random.Random(seed)
    start = today - timedelta(days=62)
    rows = db.session.execute(text(
        "SELECT id, billing_day FROM subscriptions WHERE status IN ('active', 'suspended')")).all()
    shifted = [{"id": sub_id, "d": max(bill_date_on_or_before(start, day), start - timedelta(days=27))}
               for sub_id, day in rows]
    if shifted:
        db.session.execute(text("UPDATE subscriptions SET next_bill_date = :d, billed_from = :d, "
                                "start_date = CASE WHEN start_date < :d THEN start_date ELSE :d END WHERE id = :id"),
                           shifted)
        # A subscription suspended in the demo was suspended from the start of its history, not from today.
        db.session.execute(text("UPDATE suspension_periods SET started_on = :d WHERE subscription_id = :id "
                                "AND ended_on IS NULL"), shifted)
    counts = {"invoices": 0, "payments": 0}
    for as_of in (today - timedelta(days=45), today - timedelta(days=15)):
        for first_last in billing.chunk_ranges(billing.customers_due(as_of), 500):
            counts["invoices"] += billing.bill_customer_range(as_of, first_last)["invoices"]
        for invoice in db.session.scalars(select(Invoice).where(Invoice.issue_date == as_of)):
            if rng.random() < 0.8:  # most customers pay, a few days after the invoice
                paid_on = min(today, as_of + timedelta(days=rng.randint(1, 12)))
                payments.record_payment(invoice.customer_id, invoice.total_cents, rng.choice(
                    ("mobile_money", "bank_transfer", "card", "cash")), paid_on, today,
                    reference=f"DEMO-{invoice.id}")
                counts["payments"] += 1
    collections.run_mark_overdue(today)
    return counts

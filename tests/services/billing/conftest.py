"""Fixtures shared by the billing service tests."""
from __future__ import annotations

from datetime import date

import pytest

from isp_admin.extensions import db
from isp_admin.services.billing import invoices, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.customers import subscriptions
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

D = date


@pytest.fixture
def books(app, monkeypatch):
    """Clean books: a billed, paid, part-paid, credited, voided and reversed history for three customers."""
    plan = PlanFactory(monthly_price_cents=3000, setup_fee_cents=1500, tax_rate_bp=1600)
    customers = [CustomerFactory() for _ in range(3)]
    subs = [SubscriptionFactory(customer=c, plan=plan, start_date=D(2026, 1, 10), billing_day=1,
                                next_bill_date=D(2026, 1, 10)) for c in customers]
    for day in (D(2026, 1, 10), D(2026, 2, 1), D(2026, 3, 1)):
        for chunk in billing.chunk_ranges(billing.customers_due(day), 2):
            billing.bill_customer_range(day, chunk)
    paid_up, part, credited = customers
    payments.record_payment(paid_up.id, 20000, "bank_transfer", D(2026, 3, 2), D(2026, 3, 2))
    payments.record_payment(part.id, 2500, "cash", D(2026, 3, 2), D(2026, 3, 2))
    bounced, _ = payments.record_payment(part.id, 1000, "card", D(2026, 3, 3), D(2026, 3, 3))
    payments.reverse_payment(bounced.id, "Chargeback", D(2026, 3, 4))
    monkeypatch.setattr(subscriptions, "today", lambda: D(2026, 3, 20))
    subscriptions.cancel(subs[2].id, D(2026, 3, 20))
    draft = invoices.create_draft(credited.id, [{"description": "Visit", "unit_price_cents": 5000}], D(2026, 3, 20))
    invoices.void(invoices.issue(draft.id, D(2026, 3, 20)).id, "Not done", D(2026, 3, 21))
    db.session.commit()
    return customers

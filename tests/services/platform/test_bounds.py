"""Bounded values (issue 12 item 1): every date, amount, count and text has a window, checked once in the services,
so the page, the API and the CLI refuse the same value; a catch-up too long to issue silently is held for review
while everyone else is billed."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import select, text

from isp_admin.errors import Invalid
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, InvoiceLine, Subscription
from isp_admin.services.billing import invoices, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.reconcile import reconcile
from isp_admin.services.customers import subscriptions
from isp_admin.services.platform.clock import today
from tests.api.helpers import bearer
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

D = date
ABSURD = [D(1, 1, 1), D(1900, 1, 1), D(1999, 12, 31), D(9999, 12, 31)]


def field_errors(action) -> dict:
    with pytest.raises(Invalid) as caught:
        action()
    return caught.value.details


@pytest.mark.parametrize("start", ABSURD)
def test_a_subscription_start_outside_the_window_is_refused(app, start):
    customer, plan = CustomerFactory(), PlanFactory()
    errors = field_errors(lambda: subscriptions.add_subscription(customer.id, plan.id, start))
    assert set(errors) == {"start_date"}


def test_the_window_runs_from_2000_to_a_year_ahead(app):
    customer, plan = CustomerFactory(), PlanFactory()
    subscriptions.add_subscription(customer.id, plan.id, D(2000, 1, 1), pppoe_username="first-day")
    subscriptions.add_subscription(customer.id, plan.id, today() + timedelta(days=366), pppoe_username="last-day")
    assert "start_date" in field_errors(
        lambda: subscriptions.add_subscription(customer.id, plan.id, today() + timedelta(days=367)))


def test_money_received_and_cancellations_are_never_before_the_window(app):
    customer = CustomerFactory()
    assert "received_on" in field_errors(
        lambda: payments.record_payment(customer.id, 100, "cash", D(1999, 12, 31), today()))
    sub = SubscriptionFactory(customer=customer, start_date=D(1990, 1, 1))  # written before the bounds existed
    assert "end_date" in field_errors(lambda: subscriptions.cancel(sub.id, D(1995, 1, 1)))


def test_counts_texts_and_prices_have_their_limits_too(app):
    customer, plan = CustomerFactory(), PlanFactory()
    line = {"description": "Visit", "unit_price_cents": 100}
    assert "lines" in field_errors(lambda: invoices.create_draft(customer.id, [line] * 201, today()))
    draft = invoices.create_draft(customer.id, [line], today())
    issued = invoices.issue(draft.id, today())
    assert "reason" in field_errors(lambda: invoices.void(issued.id, "x" * 501, today()))
    assert "price_override_cents" in field_errors(lambda: subscriptions.add_subscription(
        customer.id, plan.id, today(), price_override_cents=2**63))


def test_the_api_the_page_and_the_cli_refuse_the_same_date(app, client, login):
    customer, plan = CustomerFactory(), PlanFactory()
    headers = bearer("admin", "read,write,billing")

    api = client.post("/api/subscriptions/", headers=headers,
                      json={"customer_id": customer.id, "plan_id": plan.id, "start_date": "0001-01-01"})
    assert api.status_code == 422 and api.get_json()["error"]["details"].get("start_date"), api.get_json()
    bulk = client.post("/api/billing/bulk-generate/", headers=headers,
                       json={"kind": "generate_monthly_invoices", "as_of": "0001-01-01"})
    assert bulk.status_code == 422, bulk.get_json()

    login()
    preview = client.get("/billing/run?as_of=9999-12-31")
    assert preview.status_code == 422 and b"On or before" in preview.data
    page = client.post(f"/customers/{customer.id}/subscriptions/new",
                       data={"plan_id": plan.id, "start_date": "1900-01-01", "billing_day": "1"})
    assert page.status_code == 200 and b"On or after" in page.data  # the form again, with the field's error

    cli = app.test_cli_runner().invoke(args=["billing", "generate-monthly-invoices", "--date", "1900-01-01"])
    assert cli.exit_code == 2 and "On or after" in cli.output
    assert db.session.scalar(select(Subscription.id)) is None


# --- a catch-up too long to issue silently --------------------------------------------------------------------

def due_since(next_bill: date, customer=None) -> Subscription:
    return SubscriptionFactory(customer=customer or CustomerFactory(), start_date=D(2020, 1, 1), billing_day=1,
                               next_bill_date=next_bill, plan=PlanFactory(monthly_price_cents=1000, tax_rate_bp=0))


def periods_of(sub_id: int) -> int:
    return len(db.session.scalars(select(InvoiceLine.id).where(InvoiceLine.subscription_id == sub_id)).all())


def test_twelve_periods_are_billed_and_a_thirteenth_holds_the_subscription_for_review(app):
    as_of = D(2026, 11, 1)
    twelve, thirteen, legacy = due_since(D(2025, 12, 1)), due_since(D(2025, 11, 1)), due_since(D(2020, 1, 1))
    # A row written before the bounds existed (or by hand): the run holds it instead of failing on it.
    db.session.execute(text("UPDATE subscriptions SET next_bill_date = '0001-01-01', start_date = '0001-01-01', "
                            "billed_from = NULL WHERE id = :id"), {"id": legacy.id})
    db.session.commit()

    counts = billing.bill_customer_range(as_of, (twelve.customer_id, legacy.customer_id))
    db.session.commit()

    assert (periods_of(twelve.id), periods_of(thirteen.id), periods_of(legacy.id)) == (12, 0, 0)
    assert counts["held_for_review"] == 2 and counts["invoices"] == 1
    held = db.session.get(Subscription, thirteen.id)
    assert held.billing_held_on == as_of and held.billing_hold_reason.startswith("13 periods due from 01 Nov 2025")
    assert "more than 12 periods" in db.session.get(Subscription, legacy.id).billing_hold_reason
    assert db.session.scalar(select(AuditEvent.id).where(AuditEvent.action == "subscription.billing_hold",
                                                         AuditEvent.entity_id == thirteen.id)) is not None
    # Held: the next run leaves it alone (no second audit, no bill), until someone approves.
    billing.bill_customer_range(as_of, (twelve.customer_id, legacy.customer_id))
    assert periods_of(thirteen.id) == 0

    subscriptions.approve_catch_up(thirteen.id)
    billing.bill_customer_range(as_of, (thirteen.customer_id, thirteen.customer_id))
    db.session.commit()
    approved = db.session.get(Subscription, thirteen.id)
    assert (periods_of(thirteen.id), approved.billing_hold_reason, approved.catch_up_approved) == (13, None, False)
    assert reconcile() == []


def test_the_hold_shows_on_the_subscription_page_and_in_the_api(app, client, login):
    sub = due_since(D(2024, 1, 1))
    billing.bill_customer_range(D(2026, 11, 1), (sub.customer_id, sub.customer_id))
    headers = bearer("billing", "read,write,billing")

    body = client.get(f"/api/subscriptions/{sub.id}/", headers=headers).get_json()["data"]
    assert body["billing_hold_reason"].startswith("more than 12 periods due") and body["billing_held_on"]
    login()
    page = client.get(f"/subscriptions/{sub.id}")
    assert b"Billing held for review" in page.data and b"Approve the catch-up" in page.data
    approved = client.post(f"/api/subscriptions/{sub.id}/approve-catch-up/", headers=headers)
    assert approved.status_code == 200 and approved.get_json()["data"]["billing_hold_reason"] is None
    again = client.post(f"/api/subscriptions/{sub.id}/approve-catch-up/", headers=headers)
    assert again.status_code == 422

"""Integrity lives in the database: writes that bypass the services still cannot break the rules."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError

from isp_admin.extensions import db
from isp_admin.models import Customer, Plan, Subscription, User
from tests import factories


def _violates(statement) -> bool:
    try:
        with db.session.begin_nested():
            db.session.execute(statement)
    except IntegrityError:
        return True
    return False


@pytest.fixture
def sub(app):
    return factories.SubscriptionFactory()


def test_account_numbers_are_unique(app):
    factories.CustomerFactory(account_number="C00000001")
    assert _violates(insert(Customer).values(account_number="C00000001", name="Twin", status="active"))


def test_customer_status_and_email_case_are_checked(app):
    assert _violates(insert(Customer).values(account_number="C1", name="A", status="gone"))
    assert _violates(insert(Customer).values(account_number="C2", name="A", status="active", email="Big@X.example"))
    assert not _violates(insert(Customer).values(account_number="C3", name="A", status="active", email="a@x.example"))


def test_staff_emails_are_unique_whatever_their_case(app):
    factories.UserFactory(email="ops@isp.example")
    assert _violates(insert(User).values(email="OPS@isp.example", name="x", password_hash="x", role="admin"))
    assert _violates(insert(User).values(email="ops@isp.example", name="x", password_hash="x", role="admin"))
    assert _violates(insert(User).values(email="new@isp.example", name="x", password_hash="x", role="root"))


@pytest.mark.parametrize("column, value", [
    ("monthly_price_cents", -1), ("setup_fee_cents", -1), ("tax_rate_bp", 10001), ("tax_rate_bp", -1),
    ("download_mbps", 0), ("data_cap_gb", 0), ("currency", "US"),
])
def test_plan_money_and_ranges_are_checked(app, column, value):
    plan = factories.PlanFactory()
    assert _violates(update(Plan).where(Plan.id == plan.id).values({column: value}))


@pytest.mark.parametrize("values", [
    {"status": "paused"},
    {"status": "suspended", "suspension_reason": None},
    {"status": "active", "suspension_reason": "manual"},
    {"status": "suspended", "suspension_reason": "because"},
    {"billing_day": 0}, {"billing_day": 32},
    {"end_date": date(2025, 1, 1)},
    {"price_override_cents": -100},
])
def test_subscription_states_and_ranges_are_checked(sub, values):
    assert _violates(update(Subscription).where(Subscription.id == sub.id).values(values))


def test_a_subscription_needs_a_real_customer_and_plan(sub):
    assert _violates(update(Subscription).where(Subscription.id == sub.id).values(customer_id=999999))
    assert _violates(update(Subscription).where(Subscription.id == sub.id).values(plan_id=999999))


def test_a_customer_or_plan_with_subscriptions_cannot_be_deleted(sub):
    from sqlalchemy import delete

    assert _violates(delete(Customer).where(Customer.id == sub.customer_id))
    assert _violates(delete(Plan).where(Plan.id == sub.plan_id))


def test_live_network_ids_are_unique_but_cancelled_ones_are_free(sub):
    other = factories.CustomerFactory()
    row = dict(customer_id=other.id, plan_id=sub.plan_id, status="active", start_date=date(2026, 1, 1),
               billing_day=1, next_bill_date=date(2026, 2, 1), pppoe_username=sub.pppoe_username)
    assert _violates(insert(Subscription).values(row))
    db.session.execute(update(Subscription).where(Subscription.id == sub.id).values(static_ip="10.0.0.1"))
    assert _violates(insert(Subscription).values({**row, "pppoe_username": None, "static_ip": "10.0.0.1"}))
    db.session.execute(update(Subscription).where(Subscription.id == sub.id).values(status="cancelled"))
    assert not _violates(insert(Subscription).values(row))

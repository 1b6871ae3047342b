"""`flask data generate-test-data`: realistic, varied data that obeys every rule the services enforce."""
from __future__ import annotations

from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import Customer, Plan, Subscription


def test_generated_data_covers_every_state_and_billing_day(app, runner):
    result = runner.invoke(args=["data", "generate-test-data", "--customers", "1500", "--seed", "11"])
    assert result.exit_code == 0, result.output
    assert "Loaded 1500 customers" in result.output

    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1500
    statuses = dict(db.session.execute(select(Subscription.status, func.count()).group_by(Subscription.status)).all())
    assert set(statuses) == {"pending", "active", "suspended", "cancelled"}
    reasons = set(db.session.scalars(select(Subscription.suspension_reason).distinct()))
    assert reasons == {None, "non_payment", "manual", "vacation"}
    days = set(db.session.scalars(select(Subscription.billing_day).distinct()))
    assert {1, 15, 28, 29, 30, 31} <= days
    assert db.session.scalar(select(func.count()).select_from(Plan).where(Plan.active.is_(False))) >= 1
    customer_statuses = set(db.session.scalars(select(Customer.status).distinct()))
    assert customer_statuses == {"active", "suspended", "closed"}


def test_customer_status_matches_its_subscriptions(app, runner):
    assert runner.invoke(args=["data", "generate-test-data", "--customers", "800", "--seed", "5"]).exit_code == 0
    live = select(Subscription.customer_id).where(Subscription.status.in_(("active", "pending")))
    suspended_with_live = db.session.scalar(
        select(func.count()).select_from(Customer).where(Customer.status == "suspended", Customer.id.in_(live)))
    assert suspended_with_live == 0
    closed_with_any_live = db.session.scalar(select(func.count()).select_from(Customer).where(
        Customer.status == "closed",
        Customer.id.in_(select(Subscription.customer_id).where(Subscription.status != "cancelled"))))
    assert closed_with_any_live == 0


def test_running_it_twice_adds_more_without_collisions(app, runner):
    for seed in ("1", "1", "1"):  # the same seed again: account numbers, PPPoE logins and IPs must not collide
        result = runner.invoke(args=["data", "generate-test-data", "--customers", "600", "--seed", seed])
        assert result.exit_code == 0, result.output
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1800
    assert db.session.scalar(select(func.count(func.distinct(Customer.account_number)))) == 1800

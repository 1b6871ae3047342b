"""`flask data generate-test-data`: realistic, varied data that obeys every rule the services enforce."""
from __future__ import annotations

import re

import pytest
from flask_migrate import upgrade
from sqlalchemy import delete, func, select, update

from isp_admin import create_app
from isp_admin.errors import Invalid
from isp_admin.extensions import cache, db
from isp_admin.models import (
    AuditEvent,
    Customer,
    Invoice,
    Notification,
    Payment,
    PaymentAllocation,
    Plan,
    Subscription,
)
from isp_admin.services.billing.collections import run_mark_overdue
from isp_admin.services.billing.ledger import customer_balance
from isp_admin.services.billing.payments import record_payment
from isp_admin.services.billing.reconcile import reconcile
from isp_admin.services.platform.audit import SYSTEM, acting_as
from isp_admin.services.platform.clock import today
from isp_admin.services.sample_data.generator import generate
from tests.conftest import ROOT, app_config, truncate_all


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


# --- billing history (--history-months) ---------------------------------------------------------------------------

def _with_history(runner, customers: int = 300, seed: str = "3") -> str:
    result = runner.invoke(args=["data", "generate-test-data", "--customers", str(customers), "--seed", seed,
                                 "--history-months", "2"])
    assert result.exit_code == 0, result.output
    return result.output


def test_history_bills_two_months_and_most_customers_pay(app, runner):
    output = _with_history(runner)
    loaded = re.search(r"Loaded 300 customers, \d+ subscriptions, (\d+) invoices and (\d+) payments", output)
    assert loaded, output
    invoices = db.session.scalar(select(func.count()).select_from(Invoice))
    payments = db.session.scalar(select(func.count()).select_from(Payment))
    assert (invoices, payments) == (int(loaded[1]), int(loaded[2]))
    assert len(set(db.session.scalars(select(Invoice.issue_date)))) == 2, "one run per month"
    billable = db.session.scalar(select(func.count()).select_from(Invoice).where(Invoice.total_cents > 0))
    assert 0.7 <= payments / billable <= 0.9
    statuses = dict(db.session.execute(select(Invoice.status, func.count()).group_by(Invoice.status)).all())
    assert statuses.get("paid", 0) > 0 and statuses.get("overdue", 0) > 0, statuses
    assert reconcile() == []

    day = today()
    issued = {f"DEMO-{id_}": on for id_, on in db.session.execute(select(Invoice.id, Invoice.issue_date))}
    received = db.session.execute(select(Payment.reference, Payment.received_on)).all()
    assert len(received) == payments and all(ref in issued for ref, _ in received), "each names the invoice it pays"
    assert all(issued[ref] < on <= day and (on - issued[ref]).days <= 12 for ref, on in received), "never in future"

    # Each payment and each status change left its audit event, as the payment service writes them.
    actions = dict(db.session.execute(select(AuditEvent.action, func.count()).group_by(AuditEvent.action)).all())
    assert actions["payment.record"] == payments and actions["invoice.paid"] == statuses["paid"]
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "payment.record").limit(1))
    payment = db.session.get(Payment, event.entity_id)
    assert event.after == {"amount_cents": payment.amount_cents, "method": payment.method,
                           "reference": payment.reference, "invoice_id": None}
    assert event.customer_id == payment.customer_id and payment.recorded_by == "system"


def test_history_balances_equal_a_recomputation_from_invoices_and_payments(app, runner):
    _with_history(runner, seed="4")
    day = today()
    invoiced = dict(db.session.execute(select(Invoice.customer_id, func.sum(Invoice.total_cents))
                                       .group_by(Invoice.customer_id)).all())
    received = dict(db.session.execute(select(Payment.customer_id, func.sum(Payment.amount_cents))
                                       .group_by(Payment.customer_id)).all())
    assert received and set(received) <= set(invoiced)
    for customer_id, total in invoiced.items():
        balance = customer_balance(customer_id, day)
        assert balance.net_cents == total - received.get(customer_id, 0), customer_id
        assert balance.credit_cents == 0, "each payment is fully allocated"

    # Paying up reactivates non-payment suspensions, as record_payment does: no fully paid customer keeps one.
    unpaid = select(Invoice.customer_id).where(Invoice.status.in_(("open", "overdue")))
    kept = db.session.scalar(select(func.count()).select_from(Subscription).where(
        Subscription.customer_id.in_(received), Subscription.customer_id.not_in(unpaid),
        Subscription.status == "suspended", Subscription.suspension_reason == "non_payment"))
    assert kept == 0
    reactivated = set(db.session.scalars(select(AuditEvent.customer_id).where(
        AuditEvent.action == "subscription.reactivate")))
    assert reactivated and reactivated <= set(received)
    assert reactivated == set(db.session.scalars(select(Notification.customer_id).where(
        Notification.kind == "reactivation")))


def test_history_is_what_recording_the_payments_one_by_one_gives(app, runner):
    _with_history(runner, customers=200, seed="6")
    invoices = select(Invoice.id, Invoice.status, Invoice.amount_paid_cents).order_by(Invoice.id)
    allocations = select(Payment.reference, PaymentAllocation.invoice_id, PaymentAllocation.amount_cents).join(
        Payment, Payment.id == PaymentAllocation.payment_id)
    bulk = db.session.execute(invoices).all(), set(db.session.execute(allocations).all())
    recorded = db.session.execute(select(Payment.customer_id, Payment.amount_cents, Payment.method,
                                         Payment.received_on, Payment.reference).order_by(Payment.id)).all()
    assert recorded

    # Undo the payments and record them again through the payment service, in the same order.
    db.session.execute(delete(PaymentAllocation))
    db.session.execute(delete(Payment))
    db.session.execute(update(Invoice).where(Invoice.total_cents > 0).values(
        status="open", amount_paid_cents=0, paid_at=None))
    day = today()
    with acting_as(SYSTEM):
        for customer_id, amount, method, received_on, reference in recorded:
            record_payment(customer_id, amount, method, received_on, day, reference=reference)
        run_mark_overdue(day)
    db.session.expire_all()
    assert (db.session.execute(invoices).all(), set(db.session.execute(allocations).all())) == bulk


def test_the_same_seed_gives_the_same_history(app, runner):
    def snapshot():
        invoices = db.session.execute(select(
            Customer.account_number, Invoice.number, Invoice.issue_date, Invoice.total_cents, Invoice.status,
            Invoice.amount_paid_cents).join(Customer, Customer.id == Invoice.customer_id).order_by(Invoice.number))
        payments = db.session.execute(select(
            Customer.account_number, Payment.amount_cents, Payment.method, Payment.received_on, Payment.reference)
            .join(Customer, Customer.id == Payment.customer_id).order_by(Payment.id))
        return invoices.all(), payments.all()

    _with_history(runner, customers=150, seed="8")
    first = snapshot()
    truncate_all()
    cache.clear()
    _with_history(runner, customers=150, seed="8")
    assert first[1] and snapshot() == first


def test_history_months_out_of_range_is_refused(app, runner):
    for months in ("13", "-1"):
        result = runner.invoke(args=["data", "generate-test-data", "--customers", "10", "--history-months", months])
        assert result.exit_code == 2, result.output
        assert "Invalid value for '--history-months'" in result.output and "0<=x<=12" in result.output
    with pytest.raises(Invalid):
        generate(10, history_months=13)
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_history_on_sqlite(tmp_path):
    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance"))
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        try:
            _with_history(app.test_cli_runner(), customers=150)
            assert db.session.scalar(select(func.count()).select_from(Payment)) > 0
            statuses = set(db.session.scalars(select(Invoice.status).distinct()))
            assert {"paid", "overdue"} <= statuses
            assert reconcile() == []
            assert db.session.scalar(select(func.max(Payment.received_on))) <= today()
        finally:
            db.session.remove()
            db.engine.dispose()

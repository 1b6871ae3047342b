"""`flask data cleanup-old-data`: old delivered notifications and finished job runs go; money stays."""
from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import func, select, update

from isp_admin.extensions import db
from isp_admin.models import (
    AuditEvent,
    CreditNote,
    Invoice,
    InvoiceLine,
    JobRun,
    Notification,
    Payment,
    PaymentAllocation,
)
from isp_admin.models.base import utcnow
from isp_admin.services.billing import invoices, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.platform import job_runs
from tests.factories import CustomerFactory, SubscriptionFactory

DAY = date(2026, 3, 1)


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def age(model, ids, days: int, column: str = "created_at") -> None:
    db.session.execute(update(model).where(model.id.in_(ids)).values({column: utcnow() - timedelta(days=days)}))


def test_cleanup_deletes_only_old_notifications_and_job_runs(app, runner):
    customer = CustomerFactory()
    SubscriptionFactory(customer=customer, start_date=date(2026, 1, 1), billing_day=1, next_bill_date=DAY)
    billing_run = job_runs.start_run("generate_monthly_invoices", DAY, False, "test", total_chunks=1)
    billing.bill_customer_range(DAY, (customer.id, customer.id), billing_run.id)
    invoice_id = db.session.scalar(select(Invoice.id))
    payments.record_payment(customer.id, 1000, "cash", DAY, DAY, invoice_id=invoice_id)
    invoices.void(invoice_id, "Wrong plan", DAY)
    empty_run = job_runs.start_run("mark_overdue", DAY, False, "test", total_chunks=1)
    job_runs.chunk_done(empty_run.id, {"marked_overdue": 0})
    recent_run = job_runs.start_run("mark_overdue", DAY, False, "test", total_chunks=1)
    job_runs.chunk_done(recent_run.id, {"marked_overdue": 0})
    job_runs.chunk_done(billing_run.id, {"invoices": 1})
    db.session.flush()
    notes = db.session.scalars(select(Notification).order_by(Notification.id)).all()
    notes[0].status = "sent"
    queued_old = Notification(customer_id=customer.id, kind="reactivation", subject="Restored", status="queued")
    db.session.add(queued_old)
    db.session.flush()
    age(Notification, [notes[0].id, queued_old.id], 800)
    age(JobRun, [billing_run.id, empty_run.id], 800, "started_at")
    db.session.commit()
    old_sent, old_queued, billing_id, empty_id, recent_id = (notes[0].id, queued_old.id, billing_run.id,
                                                              empty_run.id, recent_run.id)
    money = {m: count(m) for m in (Invoice, InvoiceLine, Payment, PaymentAllocation, CreditNote, AuditEvent)}
    assert all(money.values()), money

    preview = runner.invoke(args=["data", "cleanup-old-data", "--days", "730", "--dry-run"])
    assert preview.exit_code == 0, preview.output
    assert "Would delete 1 notifications and 1 job runs older than 730 days" in preview.output
    assert count(Notification) == len(notes) + 1 and count(JobRun) == 3

    result = runner.invoke(args=["data", "cleanup-old-data"])

    assert result.exit_code == 0, result.output
    assert ("Deleted 1 notifications and 1 job runs older than 730 days "
            "(kept 1 old job runs that issued invoices).") in result.output
    db.session.expire_all()
    remaining = set(db.session.scalars(select(Notification.id)))
    assert old_sent not in remaining and old_queued in remaining  # undelivered mail is never dropped
    assert len(remaining) == len(notes)
    job_ids = set(db.session.scalars(select(JobRun.id)))
    assert empty_id not in job_ids and job_ids == {billing_id, recent_id}
    assert db.session.get(Invoice, invoice_id).job_run_id == billing_id
    assert {m: count(m) for m in money} == money

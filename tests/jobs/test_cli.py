"""`flask billing …`: dry runs list exactly who would be affected and write nothing; real runs are recorded;
failures are recorded and reported, not swallowed; reconcile exits non-zero on a tampered row."""
from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Invoice, InvoiceLine, JobRun, Notification, Subscription
from isp_admin.services.billing import run as billing
from tests.conftest import clean_context
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

BILL_DAY = date(2026, 3, 1)


@pytest.fixture
def cli_app(make_app):
    """An app (chunks of two customers) on an empty database."""
    with clean_context(make_app(BILLING_CHUNK_SIZE=2)) as app:
        yield app


def flask(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def customer_with_sub(name: str, next_bill: date = BILL_DAY, **fields):
    plan = PlanFactory(monthly_price_cents=3100, tax_rate_bp=1600)
    customer = CustomerFactory(name=name)
    return SubscriptionFactory(customer=customer, plan=plan, start_date=date(2026, 1, 1), billing_day=1,
                               next_bill_date=next_bill, **fields)


def snapshot() -> dict:
    """Everything a step could change, except the job-run ledger."""
    db.session.expire_all()
    counts = {table.name: db.session.scalar(select(func.count()).select_from(table))
              for table in db.metadata.sorted_tables if table.name != "job_runs"}
    subs = db.session.execute(select(Subscription.id, Subscription.status, Subscription.next_bill_date)
                              .order_by(Subscription.id)).all()
    invoices = db.session.execute(select(Invoice.id, Invoice.status).order_by(Invoice.id)).all()
    sequence = db.session.execute(text("SELECT prefix, year, last_number FROM document_sequences")).all()
    return {"counts": counts, "subs": subs, "invoices": invoices, "sequence": sequence}


def test_generate_dry_run_lists_who_would_be_invoiced_and_writes_nothing(cli_app):
    behind = customer_with_sub("Ann Behind", next_bill=date(2026, 2, 1))  # February and March
    current = customer_with_sub("Ben Current")
    customer_with_sub("Cy Later", next_bill=date(2026, 4, 1))
    before = snapshot()

    result = flask(cli_app, "billing", "generate-monthly-invoices", "--date", "2026-03-01", "--dry-run")

    assert result.exit_code == 0, result.output
    assert f"customer {behind.customer_id} Ann Behind: $71.92 (2 lines)" in result.output
    assert f"customer {current.customer_id} Ben Current: $35.96 (1 lines)" in result.output
    assert "Cy Later" not in result.output
    assert "Would issue 2 invoices with 3 lines, $107.88 in total." in result.output
    assert snapshot() == before
    [run] = db.session.scalars(select(JobRun)).all()
    assert (run.kind, run.dry_run, run.status, run.counts["invoices"]) == ("generate_monthly_invoices", True,
                                                                            "succeeded", 2)


def test_collection_dry_runs_name_the_customers_and_amounts_and_write_nothing(cli_app):
    ann, ben = customer_with_sub("Ann Late"), customer_with_sub("Ben Late")
    billing.bill_customer_range(BILL_DAY, (ann.customer_id, ben.customer_id))  # invoices due 15 March
    paid_up = customer_with_sub("Cy Paid", next_bill=date(2026, 4, 1), status="suspended",
                                suspension_reason="non_payment")
    db.session.commit()
    before = snapshot()

    overdue = flask(cli_app, "billing", "mark-overdue", "--date", "2026-03-16", "--dry-run")
    enforce = flask(cli_app, "billing", "enforce-overdue", "--date", "2026-03-23", "--dry-run")
    remind = flask(cli_app, "billing", "send-reminders", "--date", "2026-03-12", "--dry-run")
    reactivate = flask(cli_app, "billing", "reactivate-paid", "--date", "2026-03-16", "--dry-run")

    assert [r.exit_code for r in (overdue, enforce, remind, reactivate)] == [0, 0, 0, 0]
    for name in ("Ann Late", "Ben Late"):
        assert f"{name}: INV-2026-00000" in overdue.output and "$35.96" in overdue.output
        assert name in remind.output
        assert re.search(rf"suspend +customer \d+ {name}: pppoe\d+  \$35\.96 overdue", enforce.output)
    assert "mark_overdue: 2 would be affected." in overdue.output
    assert "enforce_overdue: 2 would be affected." in enforce.output
    assert remind.output.count("reminder_before") == 2
    assert f"customer {paid_up.customer_id} Cy Paid: pppoe" in reactivate.output
    assert reactivate.output.startswith("reactivate ")
    assert "Ann Late" not in reactivate.output
    assert snapshot() == before
    assert db.session.scalar(select(func.count()).select_from(JobRun).where(JobRun.dry_run.is_(False))) == 0


def test_the_nightly_dry_run_previews_each_step_on_the_ones_before_it(cli_app):
    ann = customer_with_sub("Ann Nightly", next_bill=date(2026, 2, 1))
    billing.bill_customer_range(date(2026, 2, 1), (ann.customer_id, ann.customer_id))  # due 15 Feb, unpaid
    db.session.commit()
    before = snapshot()

    result = flask(cli_app, "billing", "run-nightly", "--date", "2026-03-01", "--dry-run")

    assert result.exit_code == 0, result.output
    steps = result.output.split("== ")[1:]
    assert [s.split()[0] for s in steps] == ["generate_monthly_invoices", "mark_overdue", "enforce_overdue",
                                             "reactivate_paid", "send_reminders", "deliver_notifications"]
    assert "Would issue 1 invoices with 1 lines, $35.96 in total." in steps[0]
    assert "Ann Nightly: INV-2026-000001  $35.96" in steps[1]  # February's, not March's (due 15 March)
    assert f"customer {ann.customer_id} Ann Nightly: pppoe" in steps[2]
    assert "reminder_after" in steps[4] and "INV-2026-000001" in steps[4]
    # February's invoice email, March's, the suspension notice and the reminder.
    assert "Would send 4 queued notifications." in steps[5]
    assert snapshot() == before


def test_a_real_run_is_recorded_and_a_second_run_finds_nothing(cli_app):
    subs = [customer_with_sub(f"Customer {n}") for n in range(5)]

    first = flask(cli_app, "billing", "generate-monthly-invoices", "--date", "2026-03-01")
    again = flask(cli_app, "billing", "generate-monthly-invoices", "--date", "2026-03-01")

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert "succeeded" in first.output and "invoices=5, lines=5" in first.output
    assert "nothing to do" in again.output
    runs = db.session.scalars(select(JobRun).order_by(JobRun.id)).all()
    assert [(r.status, r.total_chunks, r.done_chunks, r.triggered_by) for r in runs] == [
        ("succeeded", 3, 3, "cli"), ("succeeded", 0, 0, "cli")]
    assert db.session.scalar(select(func.count()).select_from(InvoiceLine)) == len(subs)
    assert set(db.session.scalars(select(Invoice.job_run_id))) == {runs[0].id}

    overdue = flask(cli_app, "billing", "mark-overdue", "--date", "2026-03-16")
    assert overdue.exit_code == 0 and "marked_overdue=5" in overdue.output


def test_a_customer_the_database_refuses_is_left_out_and_reported_while_the_run_goes_on(cli_app):
    subs = [customer_with_sub(f"Customer {n}") for n in range(3)]
    # Someone billed the third customer's March by hand without moving its next bill date: the database's
    # UNIQUE(subscription_id, period_start) refuses the run's line for it.
    draft = Invoice(customer_id=subs[2].customer_id, status="draft", issue_date=BILL_DAY, due_date=BILL_DAY,
                    currency="USD")
    db.session.add(draft)
    db.session.flush()
    db.session.add(InvoiceLine(invoice_id=draft.id, subscription_id=subs[2].id, kind="subscription",
                               description="March", period_start=BILL_DAY, unit_price_cents=100, amount_cents=100,
                               tax_rate_bp=0, tax_cents=0))
    db.session.commit()

    result = flask(cli_app, "billing", "generate-monthly-invoices", "--date", "2026-03-01")

    # One bad row never stops a run (DESIGN §3): the customer is left out and named on the run, the rest billed.
    assert result.exit_code == 0, result.output
    assert "failed_customers=1" in result.output and "invoices=2" in result.output
    run = db.session.scalar(select(JobRun))
    assert (run.status, run.done_chunks, run.total_chunks) == ("succeeded", 2, 2)
    [failure] = run.counts["_failures"]
    assert (failure["customer_id"], failure["error"]) == (subs[2].customer_id, "UniqueViolation")
    assert "uq_invoice_lines_subscription_period" in failure["message"]
    assert db.session.scalar(select(func.count()).select_from(Invoice).where(Invoice.status == "open")) == 2
    assert db.session.scalar(select(func.count()).select_from(Notification)) == 2


def test_reconcile_exits_zero_when_clean_and_one_on_a_tampered_invoice(cli_app):
    ann = customer_with_sub("Ann Tampered")
    billing.bill_customer_range(BILL_DAY, (ann.customer_id, ann.customer_id))
    db.session.commit()

    clean = flask(cli_app, "billing", "reconcile")
    assert clean.exit_code == 0 and "Reconciled" in clean.output

    invoice_id = db.session.scalar(select(Invoice.id))
    db.session.execute(text("SET LOCAL session_replication_role = replica"))  # past the ledger's own guard
    db.session.execute(text("UPDATE invoices SET amount_paid_cents = 1000 WHERE id = :id"), {"id": invoice_id})
    db.session.commit()
    tampered = flask(cli_app, "billing", "reconcile")

    assert tampered.exit_code == 1
    assert (f"invoice #{invoice_id} (customer {ann.customer_id}): amount paid differs from its payment allocations: "
            "stored 1000, computed 0") in tampered.output
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "invoice.issue")) == 1


def test_run_nightly_runs_the_chain_in_process_in_order(cli_app):
    ann = customer_with_sub("Ann Nightly", next_bill=date(2026, 2, 1))
    billing.bill_customer_range(date(2026, 2, 1), (ann.customer_id, ann.customer_id))  # due 15 Feb, unpaid
    db.session.commit()

    result = flask(cli_app, "billing", "run-nightly", "--date", "2026-03-01")

    assert result.exit_code == 0, result.output
    nightly = db.session.scalar(select(JobRun).where(JobRun.kind == "nightly"))
    steps = db.session.scalars(select(JobRun).where(JobRun.parent_id == nightly.id).order_by(JobRun.id)).all()
    assert [(s.kind, s.status) for s in steps] == [
        ("generate_monthly_invoices", "succeeded"), ("mark_overdue", "succeeded"), ("enforce_overdue", "succeeded"),
        ("reactivate_paid", "succeeded"), ("send_reminders", "succeeded"), ("deliver_notifications", "succeeded")]
    assert (nightly.status, nightly.done_chunks) == ("succeeded", 6)
    assert {k: nightly.counts[k] for k in ("invoices", "marked_overdue", "suspended", "reminders_queued", "sent")} \
        == {"invoices": 1, "marked_overdue": 1, "suspended": 1, "reminders_queued": 1, "sent": 4}
    assert db.session.scalar(select(Subscription.status).where(Subscription.id == ann.id)) == "suspended"
    assert len(list(Path(cli_app.config["MAIL_OUTBOX_DIR"]).glob("*.eml"))) == 4

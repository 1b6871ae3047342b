"""One bad row never stops a run (DESIGN §3, issue 12 item 2): a customer whose billing raises (a date the calendar
cannot hold, a line or an invoice the database refuses) is left out and reported on the run, everyone else is
billed exactly once, and the nightly chain does all its steps, in process and through a real RQ worker.
"""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import OperationalError

from isp_admin.extensions import db
from isp_admin.jobs import tasks
from isp_admin.jobs.queue import start_run
from isp_admin.models import Invoice, InvoiceLine, JobRun, Subscription
from isp_admin.services.billing import collections
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.reconcile import reconcile
from isp_admin.services.platform import job_runs
from tests.factories import PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory
from tests.jobs.conftest import assert_gapless, invoice_numbers, line_counts, run_worker
from tests.support.billing import refused_by_trigger

AS_OF = date(2026, 3, 1)
NIGHTLY_STEPS = ["generate_monthly_invoices", "mark_overdue", "enforce_overdue", "reactivate_paid",
                 "send_reminders", "deliver_notifications"]


def world(good: int = 4) -> tuple[list[Subscription], Subscription]:
    """`good` customers due for February and March, and one more in their midst (the one a test makes bad)."""
    plan = PlanFactory(monthly_price_cents=3100, tax_rate_bp=1600, setup_fee_cents=0)

    def due(name: str) -> Subscription:
        return SubscriptionFactory(plan=plan, customer=CustomerFactory(name=name), start_date=date(2026, 1, 1),
                                   billing_day=1, next_bill_date=date(2026, 2, 1))

    subs = [due(f"Good {n}") for n in range(good // 2)]
    bad = due("Bad Row")
    subs += [due(f"Good {n}") for n in range(good // 2, good)]
    db.session.commit()
    return subs, bad


def plant_year_one(sub: Subscription) -> None:
    """Write what the issue found (start 0001-01-01) behind the services' back: the calendar raises on it."""
    columns = {c["name"] for c in inspect(db.engine).get_columns("subscriptions")}
    approved = ", catch_up_approved = true" if "catch_up_approved" in columns else ""  # walk it, do not hold it
    db.session.execute(text("UPDATE subscriptions SET start_date = '0001-01-01', next_bill_date = '0001-01-01', "
                            f"billed_from = '0001-01-01', billing_day = 31{approved} WHERE id = :id"), {"id": sub.id})
    db.session.commit()


def billed_periods() -> dict[int, list[date]]:
    db.session.rollback()
    out: dict[int, list[date]] = {}
    for sub_id, start in db.session.execute(select(InvoiceLine.subscription_id, InvoiceLine.period_start)
                                            .where(InvoiceLine.kind == "subscription").order_by(InvoiceLine.id)):
        out.setdefault(sub_id, []).append(start)
    return out


def assert_everyone_else_billed_once(good: list[Subscription], bad: Subscription) -> None:
    periods = billed_periods()
    assert {sub.id: periods.get(sub.id) for sub in good} == {
        sub.id: [date(2026, 2, 1), date(2026, 3, 1)] for sub in good}
    assert bad.id not in periods
    assert line_counts() == (2 * len(good), 2 * len(good))
    customers = db.session.scalars(select(Invoice.customer_id)).all()
    assert sorted(customers) == sorted(sub.customer_id for sub in good)  # one invoice each, none for the bad one
    assert_gapless(invoice_numbers(), 2026)


def assert_reported(run: JobRun, bad: Subscription, step: str, error: str, message: str) -> dict:
    db.session.refresh(run)
    assert run.status == "succeeded", run.error
    assert job_runs.failed_count(run) == 1
    [failure] = job_runs.failures(run)
    assert (failure["customer_id"], failure["customer_name"], failure["step"], failure["error"]) == (
        bad.customer_id, "Bad Row", step, error)
    assert message in failure["message"]
    assert failure["as_of"] == AS_OF.isoformat()
    return failure


def steps_of(run: JobRun) -> list[JobRun]:
    db.session.rollback()
    return db.session.scalars(select(JobRun).where(JobRun.parent_id == run.id).order_by(JobRun.id)).all()


def test_the_nightly_chain_in_process_leaves_out_only_the_customer_whose_billing_raises(jobs_app):
    good, bad = world()
    plant_year_one(bad)

    run = tasks.run_inline("nightly", AS_OF, "test")

    steps = steps_of(run)
    assert [s.kind for s in steps] == NIGHTLY_STEPS
    assert {s.status for s in steps} == {"succeeded"}, [(s.kind, s.status, s.error) for s in steps]
    assert_everyone_else_billed_once(good, bad)
    assert_reported(run, bad, "generate_monthly_invoices", "ValueError", "year 0 is out of range")
    assert_reported(steps[0], bad, "generate_monthly_invoices", "ValueError", "year 0 is out of range")
    assert (run.counts["invoices"], steps[0].counts["invoices"]) == (4, 4)
    assert job_runs.failed_count(steps[1]) == 0 and "failed_customers" not in steps[1].counts
    assert reconcile() == []

    # Again for the same date: nobody is billed twice, and the bad customer is reported again (still due).
    again = tasks.run_inline("generate_monthly_invoices", AS_OF, "test")
    assert_everyone_else_billed_once(good, bad)
    assert_reported(again, bad, "generate_monthly_invoices", "ValueError", "year 0 is out of range")


def test_a_real_worker_runs_the_whole_chain_past_a_bad_customer(jobs_app, flask_env):
    good, bad = world()
    plant_year_one(bad)

    nightly = start_run("nightly", AS_OF, "test")
    run_worker(flask_env)

    steps = steps_of(nightly)
    assert [s.kind for s in steps] == NIGHTLY_STEPS
    assert {s.status for s in steps} == {"succeeded"}, [(s.kind, s.status, s.error) for s in steps]
    assert_everyone_else_billed_once(good, bad)
    assert_reported(nightly, bad, "generate_monthly_invoices", "ValueError", "year 0 is out of range")
    assert reconcile() == []

    # The pages say so: the run's page names the customer (linked) and why, the list and the dashboard count it.
    client = jobs_app.test_client()
    admin = UserFactory(role="admin")
    db.session.commit()
    assert client.post("/login", data={"email": admin.email, "password": PASSWORD}).status_code == 302
    page = client.get(f"/billing/jobs/{nightly.id}").get_data(as_text=True)
    assert 'id="job-failures"' in page and "1 customer left out" in page
    assert f'href="/customers/{bad.customer_id}">Bad Row</a>' in page and "year 0 is out of range" in page
    listing = client.get("/billing/jobs/").get_data(as_text=True)
    assert 'data-role="failed-customers"' in listing and "1 failed" in listing
    dashboard = client.get("/").get_data(as_text=True)
    assert "1 customer failed in the last run" in dashboard
    assert f'href="/billing/jobs/{nightly.id}#job-failures"' in dashboard


def test_a_line_the_database_refuses_leaves_out_only_its_customer(jobs_app):
    good, bad = world()
    with refused_by_trigger(f"NEW.subscription_id = {bad.id}"):
        run = tasks.run_inline("generate_monthly_invoices", AS_OF, "test")
    assert_everyone_else_billed_once(good, bad)
    assert_reported(run, bad, "generate_monthly_invoices", "RaiseException", "refused by the test trigger")
    assert db.session.get(Subscription, bad.id).next_bill_date == date(2026, 2, 1)  # its whole write undone
    assert reconcile() == []


def test_an_invoice_refused_only_at_commit_leaves_out_only_its_customer(jobs_app):
    # A deferred check (the ledger's own kind) would fire at COMMIT, past any savepoint: it is run inside it.
    good, bad = world()
    with refused_by_trigger(f"NEW.customer_id = {bad.customer_id}", deferred=True):
        run = tasks.run_inline("generate_monthly_invoices", AS_OF, "test")
    assert_everyone_else_billed_once(good, bad)
    assert_reported(run, bad, "generate_monthly_invoices", "RaiseException", "refused by the test trigger")
    assert reconcile() == []


def test_a_planning_error_for_one_subscription_leaves_out_its_customer_alone(jobs_app, monkeypatch):
    good, bad = world()
    odd_plan = PlanFactory(monthly_price_cents=1313, tax_rate_bp=0, setup_fee_cents=0)
    db.session.execute(text("UPDATE subscriptions SET plan_id = :p WHERE id = :id"), {"p": odd_plan.id, "id": bad.id})
    db.session.commit()
    prorate = billing.prorate

    def broken(price, days, period_days):
        if price == 1313:
            raise ZeroDivisionError("planted")
        return prorate(price, days, period_days)

    monkeypatch.setattr(billing, "prorate", broken)
    run = tasks.run_inline("generate_monthly_invoices", AS_OF, "test")
    assert_everyone_else_billed_once(good, bad)
    assert_reported(run, bad, "generate_monthly_invoices", "ZeroDivisionError", "planted")


def test_a_transient_error_fails_the_chunk_for_a_retry_instead_of_blaming_a_customer(jobs_app, monkeypatch):
    world()

    def lost(*_args, **_kwargs):
        raise OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(billing, "plan_invoices", lost)
    with pytest.raises(OperationalError):
        billing.bill_customer_range(AS_OF, (1, 10**9))


def test_reactivation_leaves_out_a_customer_that_fails_and_reactivates_the_rest(jobs_app, monkeypatch):
    subs = [SubscriptionFactory(status="suspended", suspension_reason="non_payment", start_date=date(2026, 1, 1),
                                billing_day=1, next_bill_date=date(2026, 4, 1),
                                customer=CustomerFactory(name=name)) for name in ("Paid One", "Bad Row", "Paid Two")]
    db.session.commit()
    bad = subs[1]
    original = collections.reactivate_if_paid

    def broken(customer_id, today):
        if customer_id == bad.customer_id:
            db.session.execute(text("SELECT 1/0"))  # a database error: the savepoint takes it, not the step
        return original(customer_id, today)

    monkeypatch.setattr(collections, "reactivate_if_paid", broken)
    run = tasks.run_inline("reactivate_paid", AS_OF, "test")

    assert_reported(run, bad, "reactivate_paid", "DivisionByZero", "division by zero")
    assert run.counts["reactivated"] == 2
    db.session.rollback()
    assert {s.id: db.session.get(Subscription, s.id).status for s in subs} == {
        subs[0].id: "active", bad.id: "suspended", subs[2].id: "active"}


def test_failures_add_up_across_chunks_and_the_list_stays_bounded(jobs_app):
    run = job_runs.start_run("generate_monthly_invoices", AS_OF, False, "test", total_chunks=2)
    db.session.commit()
    for chunk in range(2):
        failures = [job_runs.failure(chunk * 1000 + n, "generate_monthly_invoices", AS_OF, ValueError("x" * 999))
                    for n in range(70)]
        job_runs.chunk_done(run.id, {"invoices": 1, **job_runs.failure_counts(failures)}, chunk_key=str(chunk))
        db.session.commit()
    db.session.refresh(run)
    assert run.status == "succeeded"
    assert job_runs.failed_count(run) == 140 and run.counts["invoices"] == 2
    kept = run.counts[job_runs.FAILURES_KEY]
    assert len(kept) == job_runs.MAX_FAILURES and kept[0]["customer_id"] == 0 and kept[70]["customer_id"] == 1000
    assert len(kept[0]["message"]) == job_runs.ERROR_LENGTH
    assert job_runs.visible_counts(run.counts) == {"invoices": 2, "failed_customers": 140}

"""Crash and concurrency safety with real processes: a worker SIGKILLed mid-run, two CLI runs at once.

Whatever happens, every due subscription-period ends up on exactly one line, invoice numbers stay gapless,
and reconcile finds nothing wrong.
"""
from __future__ import annotations

import contextlib
import os
import signal
import time

from sqlalchemy import select, text

from isp_admin.extensions import db
from isp_admin.jobs.queue import start_run
from isp_admin.models import InvoiceLine, JobRun
from isp_admin.services.billing.reconcile import reconcile
from isp_admin.services.billing.run import plan_invoices
from isp_admin.services.platform.clock import today
from isp_admin.services.sample_data.generator import generate
from tests.jobs.conftest import (
    assert_gapless,
    invoice_numbers,
    line_counts,
    run_flask,
    run_worker,
    start_flask,
)
from tests.support.processes import descendants


def load_customers(count: int) -> tuple:
    """Load `count` realistic customers; return a date on which all are due, the periods due, and the plan."""
    generate(count, seed=7)
    # Everyone due today: their bills moved 40 days back (a real run is never for a day still to come).
    db.session.execute(text("UPDATE subscriptions SET next_bill_date = next_bill_date - 40, "
                            "billed_from = billed_from - 40, start_date = LEAST(start_date, next_bill_date - 40)"))
    db.session.commit()
    as_of = today()
    plan = plan_invoices(as_of)
    expected = {(line.subscription_id, line.period_start)
                for invoice in plan.invoices for line in invoice.lines if line.kind == "subscription"}
    return as_of, expected, plan


def billed_periods() -> set:
    db.session.rollback()
    return set(db.session.execute(select(InvoiceLine.subscription_id, InvoiceLine.period_start)
                                  .where(InvoiceLine.kind == "subscription")).tuples())


def wait_until_half_done(run_id: int, timeout: float = 30) -> int:
    """Wait until the worker has committed half of the run's chunks (at least 3); return how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        db.session.rollback()
        done, total = db.session.execute(select(JobRun.done_chunks, JobRun.total_chunks)
                                         .where(JobRun.id == run_id)).one()
        if total and done >= max(3, total // 2):
            return done
        time.sleep(0.02)
    raise AssertionError(f"the worker did not get half way in {timeout}s")


def test_a_worker_killed_mid_run_leaves_nothing_double_billed_or_missing(jobs_app, flask_env):
    as_of, expected, _ = load_customers(600)
    env = {**flask_env, "BILLING_CHUNK_SIZE": "25"}
    run = start_run("generate_monthly_invoices", as_of, "test")

    worker = start_flask(env, "rq", "worker")
    try:
        done = wait_until_half_done(run.id)
        victims = [worker.pid, *descendants(worker.pid)]
        for pid in victims:  # the machine dies: worker and work horse at once, mid-transaction
            with contextlib.suppress(ProcessLookupError):  # a horse that had just finished its chunk
                os.kill(pid, signal.SIGKILL)
    finally:
        worker.kill()
        worker.communicate(timeout=10)
    db.session.rollback()
    total = db.session.get(JobRun, run.id).total_chunks
    assert 3 <= done < total and total >= 20
    assert line_counts()[0] < len(expected)

    run_worker(env)  # a new worker takes the chunks still queued
    result = run_flask(env, "billing", "generate-monthly-invoices", "--date", as_of.isoformat())
    assert result.returncode == 0, result.stdout + result.stderr

    assert billed_periods() == expected
    assert line_counts() == (len(expected), len(expected))
    numbers = invoice_numbers()
    assert_gapless(numbers, as_of.year)
    assert reconcile() == []


def test_two_cli_runs_at_once_bill_each_period_once_with_gapless_numbers(jobs_app, flask_env):
    as_of, expected, plan = load_customers(400)
    env = {**flask_env, "BILLING_CHUNK_SIZE": "50"}
    args = ("billing", "generate-monthly-invoices", "--date", as_of.isoformat())
    first, second = start_flask(env, *args), start_flask(env, *args)
    outputs = [p.communicate(timeout=60)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs

    assert billed_periods() == expected
    assert line_counts() == (len(expected), len(expected))
    assert_gapless(invoice_numbers(), as_of.year)
    assert reconcile() == []
    runs = db.session.scalars(select(JobRun).where(JobRun.kind == "generate_monthly_invoices")).all()
    assert [r.status for r in runs] == ["succeeded", "succeeded"]
    # Between them the two runs issued what one would have: the slower found those customers billed.
    assert sum(r.counts.get("invoices", 0) for r in runs) == len(plan.invoices)
    assert sum(r.counts.get("lines", 0) for r in runs) == sum(len(i.lines) for i in plan.invoices)

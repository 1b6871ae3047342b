"""A real RQ worker process runs the fanned-out monthly run and the nightly chain."""
from __future__ import annotations

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.jobs import tasks
from isp_admin.jobs.queue import get_queue, start_run
from isp_admin.models import AuditEvent, JobRun, Notification
from isp_admin.services.billing.run import plan_invoices
from isp_admin.services.platform import job_runs
from isp_admin.services.platform.job_runs import progress
from tests.jobs.conftest import assert_gapless, invoice_numbers, line_counts, run_worker
from tests.support.billing import AS_OF, billed_periods, customers_due
from tests.support.smtp import running_smtp_server


def test_a_worker_bills_every_chunk_of_a_fanned_out_run_once(jobs_app, flask_env):
    subs = customers_due(5)  # BILLING_CHUNK_SIZE is 2: three chunks
    expected = {(line.subscription_id, line.period_start)
                for invoice in plan_invoices(AS_OF).invoices for line in invoice.lines}
    assert len(expected) == 10

    run = start_run("generate_monthly_invoices", AS_OF, "test")
    run_worker(flask_env)

    assert billed_periods() == expected
    assert line_counts() == (10, 10)
    assert_gapless(invoice_numbers(), 2026)
    report = progress(run.id)
    assert (report["status"], report["done"], report["total"], report["percent"]) == ("succeeded", 3, 3, 100)
    assert report["counts"] == {"invoices": 5, "lines": 10, "total_cents": 5 * 2 * (3100 + 496)}
    assert report["finished_at"] and report["error"] is None
    issued = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "invoice.issue")).all()
    assert len(issued) == 5 and {e.actor_type for e in issued} == {"system"}
    assert {s.id for s in subs} == {sub_id for sub_id, _ in expected}

    # Again for the same date (the coordinating job called in-process): nothing is due, nothing is queued.
    again = job_runs.start_run("generate_monthly_invoices", AS_OF, False, "test")
    db.session.commit()
    assert tasks.generate_monthly_invoices(AS_OF.isoformat(), again.id) == 0
    assert line_counts() == (10, 10)
    assert (progress(again.id)["status"], progress(again.id)["total"]) == ("succeeded", 0)
    assert get_queue().count == 0


def test_the_nightly_chain_runs_every_step_in_order_on_a_worker(jobs_app, flask_env):
    customers_due(3)
    with running_smtp_server() as inbox:
        nightly = start_run("nightly", AS_OF, "test")
        run_worker({**flask_env, "MAIL_URL": inbox.url})

    db.session.rollback()
    steps = db.session.scalars(select(JobRun).where(JobRun.parent_id == nightly.id).order_by(JobRun.id)).all()
    assert [s.kind for s in steps] == ["generate_monthly_invoices", "mark_overdue", "enforce_overdue",
                                       "reactivate_paid", "send_reminders", "deliver_notifications"]
    assert {s.status for s in steps} == {"succeeded"}, [(s.kind, s.status, s.error) for s in steps]
    report = progress(nightly.id)
    assert (report["status"], report["done"], report["total"]) == ("succeeded", 6, 6)
    assert report["counts"]["invoices"] == 3 and report["counts"]["sent"] == 3
    assert sorted(m["Subject"] for m in inbox.messages) == [f"Invoice INV-2026-00000{n}" for n in (1, 2, 3)]
    assert db.session.scalars(select(Notification.status)).all() == ["sent"] * 3

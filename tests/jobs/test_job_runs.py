"""The job-run ledger (concurrent chunks count exactly, failures propagate, progress for the UI) and the
queue's behaviour when Redis is missing."""
from __future__ import annotations

import threading
from datetime import date

import pytest
from rq.job import Job
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.jobs.queue import QueueUnavailable, get_queue, start_run
from isp_admin.models import JobRun
from isp_admin.services.platform import job_runs
from tests.conftest import clean_context
from tests.support.network import free_port

DAY = date(2026, 3, 1)


def test_concurrent_chunks_count_in_exactly(app):
    run = job_runs.start_run("generate_monthly_invoices", DAY, False, "test", total_chunks=40)
    db.session.commit()
    run_id, errors = run.id, []

    def worker(offset: int) -> None:
        with app.app_context():
            try:
                for n in range(20):
                    job_runs.chunk_done(run_id, {"invoices": 1, "total_cents": 150}, chunk_key=f"{offset}-{n}")
                    db.session.commit()
            except Exception as exc:  # noqa: BLE001  (reported below)
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    report = job_runs.progress(run.id)
    assert (report["status"], report["done"], report["total"], report["percent"]) == ("succeeded", 40, 40, 100)
    assert report["counts"] == {"invoices": 40, "total_cents": 6000}
    # A chunk that is counted again (a retry after it had committed) changes nothing.
    job_runs.chunk_done(run.id, {"invoices": 1}, chunk_key="0-0")
    assert job_runs.progress(run.id)["counts"]["invoices"] == 40


def test_progress_counts_steps_into_the_parent_and_a_failure_marks_both(app):
    nightly = job_runs.start_run("nightly", DAY, False, "test", total_chunks=6)
    generate = job_runs.start_run("generate_monthly_invoices", DAY, False, "test", total_chunks=2,
                                  parent_id=nightly.id)
    job_runs.chunk_done(generate.id, {"invoices": 3}, chunk_key="1-5")
    assert job_runs.progress(generate.id)["percent"] == 50
    job_runs.chunk_done(generate.id, {"invoices": 2}, chunk_key="6-9")
    report = job_runs.progress(nightly.id)
    assert (report["done"], report["percent"], report["counts"]) == (1, 16, {"invoices": 5})
    assert [(s["kind"], s["status"]) for s in report["steps"]] == [("generate_monthly_invoices", "succeeded")]

    overdue = job_runs.start_run("mark_overdue", DAY, False, "test", total_chunks=1, parent_id=nightly.id)
    job_runs.fail_run(overdue.id, "OperationalError: server closed the connection")

    assert job_runs.progress(overdue.id)["status"] == "failed"
    parent = job_runs.progress(nightly.id)
    assert parent["status"] == "partial" and parent["finished"]
    assert parent["error"] == f"mark_overdue #{overdue.id}: OperationalError: server closed the connection"
    rows, more = job_runs.list_runs(1)
    assert [r.id for r in rows] == [overdue.id, generate.id, nightly.id] and not more


def test_a_queued_run_has_retries_with_backoff(jobs_app):
    run = start_run("mark_overdue", DAY, "ann@isp.example")

    [job] = [Job.fetch(job_id, connection=get_queue().connection) for job_id in get_queue().job_ids]
    assert job.func_name == "isp_admin.jobs.tasks.mark_overdue_invoices"
    assert job.args == (DAY.isoformat(), run.id)
    assert (job.retries_left, job.retry_intervals) == (3, [10, 60, 300])
    db.session.expire_all()
    assert (run.status, run.triggered_by, run.total_chunks) == ("running", "ann@isp.example", 1)


@pytest.mark.parametrize("redis_url", [None, "unreachable"])
def test_without_redis_nothing_is_started_and_the_cli_says_why(make_app, redis_url):
    url = f"redis://127.0.0.1:{free_port()}/0" if redis_url else None
    with clean_context(make_app(REDIS_URL=url)) as app:
        with pytest.raises(QueueUnavailable) as caught:
            start_run("nightly", DAY, "ann@isp.example")
        assert caught.value.status == 503 and caught.value.code == "EXTERNAL_SERVICE_ERROR"
        assert ("set REDIS_URL" if url is None else "does not answer") in caught.value.message
        assert db.session.scalar(select(func.count()).select_from(JobRun)) == 0

        result = app.test_cli_runner().invoke(args=["rq", "worker", "--burst"])
        assert result.exit_code == 1 and "Error: " in result.output
        assert caught.value.message in result.output

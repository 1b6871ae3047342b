"""Runs recover by themselves: the sweep re-queues lost jobs, real workers survive a worker crash and a Redis that
restarts empty, and the job run pages flag stuck runs and offer Resume.

The process tests measure how long a run takes from the fault to finishing and print it (`-s` shows the lines).
"""
from __future__ import annotations

import contextlib
import os
import signal
import time
from datetime import date, timedelta

import pytest
import redis
from rq.job import Job, JobStatus
from sqlalchemy import create_engine, select, text

from isp_admin.devserver import free_port
from isp_admin.extensions import db
from isp_admin.jobs import recovery, tasks
from isp_admin.jobs.queue import get_queue, run_job_id, start_run
from isp_admin.jobs.schedule import periodic_jobs, scheduled
from isp_admin.models import AuditEvent, JobRun
from isp_admin.models.base import utcnow
from isp_admin.services.billing.run import customers_due as due_customer_ids
from isp_admin.services.billing.run import plan_invoices
from isp_admin.services.platform import job_runs
from tests.factories import PASSWORD, UserFactory
from tests.jobs.conftest import assert_gapless, invoice_numbers, line_counts, run_worker, start_flask
from tests.support.billing import AS_OF, billed_periods, customers_due
from tests.support.processes import descendants, kill, start_redis

LEASE = 4  # seconds: the process tests' workers take a run whose jobs went quiet this long for lost


def wait_for(predicate, what: str, timeout: float = 60, every: float = 0.1):
    """Poll `predicate` until it returns something truthy; return it, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_status(run_id: int) -> tuple[str, int, int]:
    db.session.rollback()
    return db.session.execute(select(JobRun.status, JobRun.done_chunks, JobRun.total_chunks)
                              .where(JobRun.id == run_id)).one()


def age(run_id: int, seconds: int = 3600) -> None:
    """Make a run (and its steps) look as old as `seconds`."""
    past = utcnow() - timedelta(seconds=seconds)
    db.session.execute(JobRun.__table__.update().where(JobRun.id == run_id).values(started_at=past))
    db.session.execute(JobRun.__table__.update().where(JobRun.parent_id == run_id)
                       .values(started_at=past, finished_at=past))
    db.session.commit()


def expected_periods() -> set:
    return {(line.subscription_id, line.period_start)
            for invoice in plan_invoices(AS_OF).invoices for line in invoice.lines}


def fanned_out_run(count: int = 5) -> JobRun:
    """A monthly run fanned out in-process: its chunk jobs (2 customers each) wait on the test's queue."""
    customers_due(count)
    run = job_runs.start_run("generate_monthly_invoices", AS_OF, False, "test")
    db.session.commit()
    assert tasks.generate_monthly_invoices(AS_OF.isoformat(), run.id) == (count + 1) // 2
    return run


def chunk_ids(run_id: int) -> list[str]:
    total = db.session.get(JobRun, run_id).total_chunks
    return [tasks._chunk_job_id(run_id, index) for index in range(total)]


# --- the sweep, unit by unit ---------------------------------------------------------------------------------------


def test_the_sweep_requeues_a_lost_chunk_and_leaves_live_ones_and_young_runs_alone(jobs_app, flask_env):
    run = fanned_out_run(5)  # three chunks
    expected = expected_periods()
    queue = get_queue()
    first, lost, last = chunk_ids(run.id)
    Job.fetch(lost, connection=queue.connection).delete()  # as if Redis had lost it
    assert queue.job_ids == [first, last]

    assert recovery.sweep() == []  # younger than the lease: not looked at
    age(run.id)
    [outcome] = recovery.sweep()

    assert outcome.action == "resumed" and "part 2" in outcome.message
    assert sorted(queue.job_ids) == sorted([first, lost, last])  # the live two not queued twice
    requeued = Job.fetch(lost, connection=queue.connection)
    ranges = db.session.get(JobRun, run.id).counts[job_runs.RANGES_KEY]
    assert requeued.func_name == "isp_admin.jobs.tasks.bill_chunk"
    assert requeued.args == (AS_OF.isoformat(), *ranges[1], run.id, ())
    db.session.rollback()
    refreshed = db.session.get(JobRun, run.id)
    assert refreshed.status == "running" and refreshed.counts[job_runs.RECOVERIES_KEY] == 1
    assert "queued 1 lost job(s) again (part 2" in job_runs.recovery_log(refreshed)[-1]
    assert job_runs.visible_counts(refreshed.counts) == {}  # the bookkeeping stays hidden
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "job_run.recover"))
    assert event.entity_id == run.id and event.after["requeued"] == [lost]

    assert recovery.sweep()[0].action == "healthy"  # nothing lost now: a second sweep does nothing
    assert len(queue.job_ids) == 3
    run_worker(flask_env)
    assert run_status(run.id) == ("succeeded", 3, 3)
    assert line_counts() == (10, 10) and billed_periods() == expected and len(expected) == 10


def test_a_started_job_is_alive_while_it_beats_and_lost_when_it_stops(jobs_app):
    run = fanned_out_run(3)
    connection = get_queue().connection
    job = Job.fetch(chunk_ids(run.id)[0], connection=connection)
    job.set_status(JobStatus.STARTED)
    job.heartbeat(utcnow(), 60)
    assert recovery.job_state(job.id, connection, lease=30)[0] == recovery.ALIVE
    job.heartbeat(utcnow() - timedelta(seconds=45), 60)
    state, detail = recovery.job_state(job.id, connection, lease=30)
    assert state == recovery.LOST and "has not beaten for 45s" in detail
    assert recovery.job_state("no-such-job", connection, lease=30) == (recovery.LOST, "not in Redis")


def test_a_run_recovered_too_often_is_failed_with_the_reason(jobs_app):
    run = fanned_out_run(3)
    for job_id in chunk_ids(run.id):
        Job.fetch(job_id, connection=get_queue().connection).delete()
    locked = job_runs.lock(run.id)
    locked.counts = {**locked.counts, job_runs.RECOVERIES_KEY: jobs_app.config["JOB_MAX_RECOVERIES"]}
    db.session.commit()
    age(run.id)

    [outcome] = recovery.sweep()

    assert outcome.action == "failed"
    db.session.rollback()
    failed = db.session.get(JobRun, run.id)
    assert failed.status == "failed" and failed.finished_at is not None
    assert failed.error.startswith("recovery: lost its jobs again after 5 recoveries; gave up (2 still to do")
    assert get_queue().count == 0  # nothing queued for a run given up on


def test_a_chunk_whose_retries_ran_out_fails_the_run_saying_which(jobs_app):
    run = fanned_out_run(3)
    Job.fetch(chunk_ids(run.id)[1], connection=get_queue().connection).set_status(JobStatus.FAILED)
    age(run.id)

    assert recovery.sweep()[0].action == "failed"
    error = db.session.get(JobRun, run.id).error
    assert "part 2 (ids" in error and "failed after its retries" in error


def test_lost_coordinators_and_cli_runs(jobs_app):
    customers_due(3)
    queued = start_run("generate_monthly_invoices", AS_OF, "test")  # its coordinator has the run's stable id
    connection = get_queue().connection
    assert Job.exists(run_job_id(queued.id), connection)
    Job.fetch(run_job_id(queued.id), connection=connection).delete()
    cli = job_runs.start_run("generate_monthly_invoices", AS_OF, False, "cli")  # runs in a CLI process
    db.session.commit()
    age(queued.id)
    age(cli.id)

    outcomes = {o.run_id: o.action for o in recovery.sweep()}

    assert outcomes == {queued.id: "resumed", cli.id: "skipped"}
    assert Job.fetch(run_job_id(queued.id), connection=connection).args == (AS_OF.isoformat(), queued.id, ())
    assert get_queue().job_ids == [run_job_id(queued.id)]


def test_a_chain_whose_next_step_never_started_is_carried_on(jobs_app):
    customers_due(1)
    nightly = job_runs.start_run("nightly", AS_OF, False, "scheduler", total_chunks=6)
    db.session.commit()
    step = job_runs.start_run("generate_monthly_invoices", AS_OF, False, "nightly", parent_id=nightly.id)
    job_runs.expect_chunks(step.id, 0)  # succeeded: as if its worker died right after committing it
    db.session.commit()
    age(nightly.id)

    [outcome] = recovery.sweep()

    assert outcome.action == "resumed" and "mark_overdue" in outcome.message
    steps = db.session.scalars(select(JobRun).where(JobRun.parent_id == nightly.id).order_by(JobRun.id)).all()
    assert [(s.kind, s.status) for s in steps] == [("generate_monthly_invoices", "succeeded"),
                                                   ("mark_overdue", "running")]
    queued = Job.fetch(run_job_id(steps[1].id), connection=get_queue().connection)
    assert queued.func_name == "isp_admin.jobs.tasks.mark_overdue_invoices"
    assert queued.args[2] and "enforce_overdue" in queued.args[2][0]  # the rest of the chain travels on
    # The new step is young and running: the parent is left to it, and nothing more is started.
    assert [o.action for o in recovery.sweep()] == ["healthy"]
    assert get_queue().job_ids == [queued.id]


# --- real processes -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def customer_locked(database_url: str, customer_id: int):
    """Hold one customer's row lock from outside, so the chunk that bills them blocks until released."""
    engine = create_engine(database_url)
    connection = engine.connect()
    transaction = connection.begin()
    connection.execute(text("SELECT id FROM customers WHERE id = :id FOR UPDATE"), {"id": customer_id})
    try:
        yield transaction
    finally:
        if transaction.is_active:
            transaction.rollback()
        connection.close()
        engine.dispose()


def stop(process) -> str:
    """Stop a `flask` process we started (SIGTERM, then SIGKILL) and return what it printed."""
    if process.returncode is not None:
        return ""
    process.terminate()
    try:
        return process.communicate(timeout=30)[0] or ""
    except Exception:
        process.kill()
        return process.communicate(timeout=10)[0] or ""


def test_a_worker_killed_with_its_horse_mid_chunk_is_recovered_by_another_worker(jobs_app, flask_env, backends):
    customers_due(12)  # three customers a chunk: four chunks
    expected = expected_periods()
    env = {**flask_env, "BILLING_CHUNK_SIZE": "3", "JOB_LEASE_SECONDS": str(LEASE), "JOB_SWEEP_SECONDS": "1"}
    first_customer = due_customer_ids(AS_OF)[0]
    names = {"a": f"{flask_env['RQ_QUEUE']}-a", "b": f"{flask_env['RQ_QUEUE']}-b"}
    workers = {}
    with customer_locked(backends["database_url"], first_customer) as lock:
        run = start_run("generate_monthly_invoices", AS_OF, "test")
        try:
            workers = {key: start_flask(env, "rq", "worker", "--name", name) for key, name in names.items()}
            connection = get_queue().connection
            # The other worker does the other three chunks; chunk 0 waits on the lock in one worker's horse.
            wait_for(lambda: run_status(run.id)[1:] == (3, 4), "three of four chunks done")
            blocked = Job.fetch(tasks._chunk_job_id(run.id, 0), connection=connection)
            assert blocked.get_status() == JobStatus.STARTED
            victim = next(key for key, name in names.items() if name == blocked.worker_name)
            survivor = workers["b" if victim == "a" else "a"]
            pids = [workers[victim].pid, *descendants(workers[victim].pid)]
            assert len(pids) >= 2  # the worker and its horse (and RQ's scheduler process)
            for pid in pids:  # the machine dies: worker and horse at once
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            fault = time.monotonic()
            workers[victim].communicate(timeout=10)
            lock.rollback()  # the dead horse's transaction is aborted by PostgreSQL; nothing of it commits

            wait_for(lambda: run_status(run.id)[0] != "running", "the run to finish", timeout=90)
            recovered_in = time.monotonic() - fault
            print(f"\nworker+horse SIGKILL: run finished {recovered_in:.1f}s after the fault (lease {LEASE}s)")
            assert survivor.poll() is None
        finally:
            for process in workers.values():
                stop(process)

    assert run_status(run.id) == ("succeeded", 4, 4)
    assert recovered_in < LEASE + 20
    assert billed_periods() == expected and line_counts() == (24, 24)
    assert_gapless(invoice_numbers(), AS_OF.year)
    log = job_runs.recovery_log(db.session.get(JobRun, run.id))
    assert len(log) == 1 and "recovered: queued 1 lost job(s) again (part 1" in log[0]


def test_workers_and_the_scheduler_ride_out_redis_killed_and_restarted_empty(jobs_app, flask_env, backends, tmp_path,
                                                                             monkeypatch):
    port = free_port()
    own_redis = start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setitem(jobs_app.config, "REDIS_URL", url)  # this test's run is queued on its own Redis
    customers_due(12)
    expected = expected_periods()
    env = {**flask_env, "REDIS_URL": url, "BILLING_CHUNK_SIZE": "3", "JOB_LEASE_SECONDS": str(LEASE),
           "JOB_SWEEP_SECONDS": "1", "LOG_LEVEL": "WARNING"}
    second_chunk_customer = due_customer_ids(AS_OF)[3]
    processes, outputs = [], []
    try:
        with customer_locked(backends["database_url"], second_chunk_customer) as lock:
            run = start_run("generate_monthly_invoices", AS_OF, "test")
            worker = start_flask(env, "rq", "worker")
            scheduler = start_flask(env, "rq", "scheduler", "--interval", "1")
            processes = [worker, scheduler]
            wait_for(lambda: len(scheduled()) == len(periodic_jobs()), "the schedule to be registered")
            wait_for(lambda: run_status(run.id)[1:] == (1, 4), "the first chunk done")
            wait_for(lambda: get_queue().count == 2, "the second chunk to start (two still queued)")

            kill(own_redis)  # SIGKILL, no persistence: every queued job and registration is gone
            fault = time.monotonic()
            time.sleep(3)
            own_redis = start_redis(port, tmp_path)
            lock.rollback()

        wait_for(lambda: run_status(run.id)[0] != "running", "the run to finish", timeout=90)
        recovered_in = time.monotonic() - fault
        print(f"\nredis SIGKILLed, back empty after 3s: run finished {recovered_in:.1f}s after the fault")
        assert [p.poll() for p in processes] == [None, None]  # the same processes: nobody exited or restarted
        wait_for(lambda: len(scheduled()) == len(periodic_jobs()), "the scheduler to register its periodic jobs again",
                 timeout=30)
        client = redis.Redis.from_url(url)
        wait_for(lambda: any(b"rq:worker:" in key for key in client.smembers("rq:workers")),
                 "the worker to register again", timeout=30)
    finally:
        outputs = [stop(process) for process in processes]
        kill(own_redis)
    output = outputs[0]
    (tmp_path / "worker.log").write_text(output)  # kept with the test's files, to read when it fails
    assert run_status(run.id) == ("succeeded", 4, 4)
    assert recovered_in < LEASE + 20
    assert billed_periods() == expected and line_counts() == (24, 24)
    assert_gapless(invoice_numbers(), AS_OF.year)
    # Said once when lost and once when back, not per retry; RQ's own line per attempt is filtered out.
    assert output.count("redis unreachable") == 1 and output.count("redis is back") == 1, output[-3000:]
    assert "could not connect to Redis" not in output


# --- the pages ----------------------------------------------------------------------------------------------------


def sign_in(app, role: str):
    client = app.test_client()
    user = UserFactory(role=role)
    assert client.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 302
    return client


def test_a_stuck_run_is_flagged_and_resumed_by_the_button_once(jobs_app):
    run = fanned_out_run(3)
    for job_id in chunk_ids(run.id):
        Job.fetch(job_id, connection=get_queue().connection).delete()
    age(run.id)
    client = sign_in(jobs_app, "billing")

    listing = client.get("/billing/jobs/").get_data(as_text=True)
    assert ">stuck</span>" in listing and f"/billing/jobs/{run.id}/resume" in listing
    page = client.get(f"/billing/jobs/{run.id}").get_data(as_text=True)
    assert 'id="job-stuck"' in page and "Resume</button>" in page

    response = client.post(f"/billing/jobs/{run.id}/resume", follow_redirects=True)
    assert response.status_code == 200
    assert "queued 2 lost job(s) again" in response.get_data(as_text=True)
    assert sorted(get_queue().job_ids) == sorted(chunk_ids(run.id))
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "job_run.recover"))
    assert event.actor_type == "user" and event.after["manual"] is True

    again = client.post(f"/billing/jobs/{run.id}/resume", follow_redirects=True).get_data(as_text=True)
    assert "nothing is lost" in again and len(get_queue().job_ids) == 2  # idempotent
    assert 'id="job-stuck"' not in again and "Recovery" in again


def test_resume_reopens_a_failed_run_and_a_finished_one_is_left_alone(jobs_app, flask_env):
    run = fanned_out_run(3)
    second = chunk_ids(run.id)[1]
    Job.fetch(second, connection=get_queue().connection).set_status(JobStatus.FAILED)
    job_runs.fail_run(run.id, "RuntimeError: the database went away")
    db.session.commit()
    client = sign_in(jobs_app, "admin")
    assert 'id="job-failed"' in client.get(f"/billing/jobs/{run.id}").get_data(as_text=True)

    flashed = client.post(f"/billing/jobs/{run.id}/resume", follow_redirects=True).get_data(as_text=True)

    assert "resumed by hand" in flashed
    db.session.rollback()
    assert db.session.get(JobRun, run.id).status == "running"
    run_worker(flask_env)
    assert run_status(run.id) == ("succeeded", 2, 2)
    assert line_counts() == (6, 6)
    finished = client.post(f"/billing/jobs/{run.id}/resume", follow_redirects=True).get_data(as_text=True)
    assert "has already succeeded; nothing to resume" in finished and get_queue().count == 0


@pytest.mark.parametrize("role", ["support", "readonly"])
def test_only_admin_and_billing_may_resume(jobs_app, role):
    run = fanned_out_run(3)
    age(run.id)
    for job_id in chunk_ids(run.id):  # nothing alive: stuck
        Job.fetch(job_id, connection=get_queue().connection).delete()
    client = sign_in(jobs_app, role)
    page = client.get(f"/billing/jobs/{run.id}").get_data(as_text=True)
    assert 'id="job-stuck"' in page and "Resume</button>" not in page
    assert client.post(f"/billing/jobs/{run.id}/resume").status_code == 403
    assert get_queue().count == 0 and job_runs.recovery_log(db.session.get(JobRun, run.id)) == []


def test_resume_needs_the_forms_csrf_token(make_app, backends, queue_name):
    from tests.conftest import clean_context
    from tests.jobs.conftest import _drop_redis_keys

    app = make_app(RQ_QUEUE=queue_name, BILLING_CHUNK_SIZE=2, WTF_CSRF_ENABLED=True)
    try:
        with clean_context(app):
            run = fanned_out_run(3)
            age(run.id)
            for job_id in chunk_ids(run.id):
                Job.fetch(job_id, connection=get_queue().connection).delete()
            client = app.test_client()
            user = UserFactory(role="admin")
            login_page = client.get("/login").get_data(as_text=True)
            token = login_page.split('name="csrf_token" type="hidden" value="', 1)[1].split('"', 1)[0]
            assert client.post("/login", data={"email": user.email, "password": PASSWORD,
                                               "csrf_token": token}).status_code == 302
            page = client.get(f"/billing/jobs/{run.id}").get_data(as_text=True)
            form = page.split(f'action="/billing/jobs/{run.id}/resume"', 1)[1].split("</form>", 1)[0]
            assert 'name="csrf_token"' in form

            assert client.post(f"/billing/jobs/{run.id}/resume").status_code == 400  # the app's CSRF check
            assert get_queue().count == 0
            form_token = form.split('value="', 1)[1].split('"', 1)[0]
            client.post(f"/billing/jobs/{run.id}/resume", data={"csrf_token": form_token})
            assert len(get_queue().job_ids) == 2
    finally:
        _drop_redis_keys(backends["redis_url"], queue_name)


def test_the_jobs_pages_render_without_redis_and_with_no_runs(jobs_app, monkeypatch):
    client = sign_in(jobs_app, "readonly")
    assert "No runs yet" in client.get("/billing/jobs/").get_data(as_text=True)
    run = job_runs.start_run("generate_monthly_invoices", date(2026, 3, 1), False, "test")
    db.session.commit()
    age(run.id)
    monkeypatch.setitem(jobs_app.config, "REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nobody there
    assert client.get("/billing/jobs/").status_code == 200
    assert client.get(f"/billing/jobs/{run.id}").status_code == 200
    admin = sign_in(jobs_app, "admin")
    flashed = admin.post(f"/billing/jobs/{run.id}/resume", follow_redirects=True).get_data(as_text=True)
    assert "could not be resumed" in flashed and db.session.get(JobRun, run.id).status == "running"



"""SIGTERM, as an orchestrator sends it on every deploy, with real processes: gunicorn on deploy/gunicorn.conf.py
lets the request in flight finish and then exits 0; an RQ worker lets the job in hand finish and then exits 0.

Each request or job is held mid-way, deterministically, by a PostgreSQL row lock the test takes first (the
customer row that recording a payment or billing a chunk locks), so the signal always lands while it runs.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select

from isp_admin.devserver import free_port
from isp_admin.extensions import db
from isp_admin.jobs.queue import start_run
from isp_admin.models import Customer, Invoice, JobRun
from tests.conftest import ROOT, RUN_ID
from tests.factories import CustomerFactory
from tests.gunicorn_helpers import PAYMENTS, billing_token, call, wait_answering, wait_until
from tests.jobs import conftest as jobs_fixtures
from tests.jobs.conftest import assert_gapless, invoice_numbers, line_counts
from tests.support.billing import AS_OF, customers_due
from tests.support.idempotency import payment_body, payments_of
from tests.support.locks import customer_lock, holding_row_lock, lock_waiters

GRACEFUL_TIMEOUT = 20  # seconds; the test releases its lock long before
# The jobs tests' fixtures: a queue of the test's own, an app on it, the environment of a `flask` subprocess.
queue_name, jobs_app, flask_env = jobs_fixtures.queue_name, jobs_fixtures.jobs_app, jobs_fixtures.flask_env


def stop(process: subprocess.Popen) -> None:
    """Make sure a process we started is gone (SIGKILL if a failed test left it running)."""
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def refuses_connections(port: int) -> bool:
    """Whether nothing listens on the port any more."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


@contextmanager
def gunicorn_from_deploy_config(backends, tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    """Run `gunicorn -c deploy/gunicorn.conf.py wsgi:app` (one worker) on a free port; yield it, the port, its log."""
    port, log = free_port(), tmp_path / "gunicorn.log"
    env = {**os.environ, "APP_ENV": "testing", "SECRET_KEY": "test-secret-key-not-for-production",
           "DATABASE_URL": backends["database_url"], "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
           "RATELIMIT_ENABLED": "false", "CACHE_KEY_PREFIX": f"test:{RUN_ID}:", "LOG_LEVEL": "WARNING",
           "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1",
           "GUNICORN_GRACEFUL_TIMEOUT": str(GRACEFUL_TIMEOUT), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    env.pop("REDIS_URL", None)  # the request under test needs only the database
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"],
                                  cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    try:
        wait_answering(server, base, log)
        yield server, port, log
    finally:
        stop(server)


def test_sigterm_to_gunicorn_lets_the_request_in_flight_finish_then_it_exits_0(app, backends, tmp_path):
    customer_id = CustomerFactory().id
    headers, _ = billing_token()

    with gunicorn_from_deploy_config(backends, tmp_path) as (server, port, log), ThreadPoolExecutor(1) as pool:
        base = f"http://127.0.0.1:{port}"
        with holding_row_lock(customer_lock(customer_id)) as (lock, pid):
            in_flight = pool.submit(call, base, "POST", PAYMENTS, payment_body(customer_id, 4200), headers)
            wait_until(lambda: lock_waiters(pid) == 1, "the payment to wait for the customer row")

            server.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            wait_until(lambda: refuses_connections(port), "gunicorn to stop accepting connections", timeout=10)
            # New connections are refused, yet the worker is still there, waiting on its request.
            assert server.poll() is None and not in_flight.done()
            lock.rollback()
            status, _, body = in_flight.result(timeout=GRACEFUL_TIMEOUT)
        assert server.wait(timeout=GRACEFUL_TIMEOUT) == 0
        took = time.monotonic() - signalled

    assert status == 201, body
    assert json.loads(body)["data"]["amount_cents"] == 4200
    assert [p.amount_cents for p in payments_of(customer_id)] == [4200]
    assert took < GRACEFUL_TIMEOUT  # it left because the request was done, not because the timeout ran out
    text = log.read_text()
    assert "Handling signal: term" in text and "Shutting down: Master" in text
    assert "Worker exiting" in text and "WORKER TIMEOUT" not in text and "SIGKILL" not in text


def worker_lines(log: Path) -> list[dict]:
    """The worker's JSON log lines."""
    lines = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def run_status(run_id: int) -> str:
    db.session.rollback()
    return db.session.scalar(select(JobRun.status).where(JobRun.id == run_id))


@pytest.mark.parametrize("to", ["worker", "process group"])
def test_sigterm_to_a_worker_lets_the_job_in_hand_finish_then_it_exits_0(jobs_app, flask_env, tmp_path, to):
    subscriptions = customers_due(3)
    run = start_run("generate_monthly_invoices", AS_OF, "test")  # commits the customers and the run
    held = min(s.customer_id for s in subscriptions)
    # One chunk for all three customers: the job in hand is the run's last, so finishing it finishes the run.
    env = {**flask_env, "BILLING_CHUNK_SIZE": "100", "LOG_LEVEL": "INFO", "LOG_FORMAT": "json"}
    log = tmp_path / "worker.log"

    with holding_row_lock(select(Customer.id).where(Customer.id == held).with_for_update()) as (lock, pid):
        with log.open("wb") as out:
            worker = subprocess.Popen([sys.executable, "-m", "flask", "rq", "worker"], cwd=ROOT, env=env,
                                      stdout=out, stderr=subprocess.STDOUT, process_group=0)
        try:
            wait_until(lambda: lock_waiters(pid) == 1, "the billing chunk to wait for the customer row", timeout=60)
            if to == "worker":  # what Kubernetes and `docker stop` do: the container's main process only
                worker.send_signal(signal.SIGTERM)
            else:  # what a shell's job control does: the worker's whole group (RQ keeps its horse out of it)
                os.killpg(worker.pid, signal.SIGTERM)
            wait_until(lambda: "warm shut down requested" in log.read_text(), "the worker to take the signal")
            time.sleep(0.5)  # long enough for a worker that would not wait to have gone
            assert worker.poll() is None and run_status(run.id) == "running"
            lock.rollback()
            assert worker.wait(timeout=30) == 0, log.read_text()[-3000:]
        finally:
            stop(worker)

    assert run_status(run.id) == "succeeded"
    assert line_counts() == (6, 6)  # each customer billed for February and March, once
    assert len(db.session.scalars(select(Invoice)).all()) == 3
    assert_gapless(invoice_numbers(), AS_OF.year)
    finished = [line for line in worker_lines(log) if line.get("event") == "job finished"]
    assert [(line["job"], line["ok"]) for line in finished] == [
        ("isp_admin.jobs.tasks.generate_monthly_invoices", True), ("isp_admin.jobs.tasks.bill_chunk", True)]

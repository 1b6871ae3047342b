"""Fixtures for the jobs tests: an app on its own RQ queue, real `flask` subprocesses (worker, CLI) on the
same database and Redis, and helpers that read what they wrote.

Every test gets a queue name of its own (and so its own scheduler keys), so parallel runs and other tests
never take each other's jobs.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import Invoice, InvoiceLine
from tests.conftest import ROOT, RUN_ID, clean_context

# What a test worker subprocess needs beyond the queue: same database, same Redis, same secrets.
BASE_ENV = {
    "APP_ENV": "testing",
    "SECRET_KEY": "test-secret-key-not-for-production",
    "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
    "FLASK_APP": "wsgi.py",
    "LOG_LEVEL": "WARNING",
    "CACHE_KEY_PREFIX": f"test:{RUN_ID}:",
    "RATELIMIT_KEY_PREFIX": f"test-rl:{RUN_ID}",
}


@pytest.fixture
def queue_name() -> str:
    """An RQ queue name no other test or run uses."""
    return f"test-{RUN_ID}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def jobs_app(make_app, backends, queue_name, tmp_path) -> Iterator:
    """An app on an empty database whose jobs go to this test's queue; requires Redis."""
    if not backends["redis_url"]:
        pytest.skip("needs Redis")
    app = make_app(RQ_QUEUE=queue_name, BILLING_CHUNK_SIZE=2, MAIL_OUTBOX_DIR=str(tmp_path / "outbox"))
    with clean_context(app):
        yield app
    _drop_redis_keys(backends["redis_url"], queue_name)


def _drop_redis_keys(url: str, name: str) -> None:
    """Delete this test's queue, its jobs and every key named after it (registries, scheduler, chunks)."""
    from rq import Queue

    connection = redis.Redis.from_url(url)
    Queue(name, connection=connection).delete(delete_jobs=True)
    keys = list(connection.scan_iter(match=f"*{name}*", count=1000))
    if keys:
        connection.delete(*keys)


@pytest.fixture
def flask_env(jobs_app, backends, queue_name) -> dict:
    """The environment a `flask` subprocess needs to act on this test's database, Redis and queue."""
    return {
        **os.environ, **BASE_ENV,
        "DATABASE_URL": backends["database_url"],
        "REDIS_URL": backends["redis_url"],
        "RQ_QUEUE": queue_name,
        "BILLING_CHUNK_SIZE": str(jobs_app.config["BILLING_CHUNK_SIZE"]),
    }


def run_flask(env: dict, *args: str, timeout: float = 60, **env_overrides) -> subprocess.CompletedProcess:
    """Run `python -m flask …` in the project directory and return the finished process."""
    return subprocess.run([sys.executable, "-m", "flask", *args], env={**env, **env_overrides}, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def start_flask(env: dict, *args: str, **env_overrides) -> subprocess.Popen:
    """Start `python -m flask …` in the background."""
    return subprocess.Popen([sys.executable, "-m", "flask", *args], env={**env, **env_overrides}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_worker(env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a real RQ worker in burst mode until the test's queue is empty."""
    result = run_flask(env, "rq", "worker", "--burst", timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def line_counts() -> tuple[int, int]:
    """(subscription lines, distinct subscription-periods): equal when nothing is billed twice."""
    db.session.rollback()
    lines = db.session.scalar(select(func.count()).select_from(InvoiceLine).where(InvoiceLine.kind == "subscription"))
    distinct = db.session.scalar(select(func.count()).select_from(
        select(InvoiceLine.subscription_id, InvoiceLine.period_start).where(InvoiceLine.kind == "subscription")
        .distinct().subquery()))
    return lines, distinct


def invoice_numbers() -> list[str]:
    """Every issued invoice number, sorted."""
    db.session.rollback()
    return sorted(db.session.scalars(select(Invoice.number).where(Invoice.number.is_not(None))))


def assert_gapless(numbers: list[str], year: int) -> None:
    """INV-YYYY-000001 .. N with no hole and no repeat."""
    assert numbers == [f"INV-{year}-{n:06d}" for n in range(1, len(numbers) + 1)]

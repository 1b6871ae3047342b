"""docs/api.md, run for real: every bash and python block, in order, against gunicorn on a fresh database.

The server is what a deployment runs: gunicorn (2 sync workers) on `wsgi:app`, a migrated PostgreSQL database of
its own, Redis, an RQ worker for the billing run, and a real SMTP server (aiosmtpd) for the invoice emails.
The blocks share one scratch directory (the guide's convention: responses saved as .json files), and see the
server's environment, as `flask tokens create` would on the server. Then `flask perf test-api-performance --url`
times the same server.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from flask_migrate import upgrade
from sqlalchemy import func, select

from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.models import ApiToken, Customer, IdempotencyKey, Invoice, JobRun, Payment, Subscription
from isp_admin.services.identity import tokens as token_service
from isp_admin.services.identity import users as user_service
from isp_admin.services.platform.audit import SYSTEM, acting_as
from isp_admin.services.platform.clock import today
from isp_admin.services.sample_data.demo import bill_history
from isp_admin.services.sample_data.generator import ensure_plans, generate
from tests.conftest import (
    CI,
    REDIS_URL,
    ROOT,
    RUN_ID,
    _postgres_available,
    _redis_available,
    app_config,
    create_database,
    drop_database,
)
from tests.support.network import free_port
from tests.support.smtp import running_smtp_server

GUIDE = ROOT / "docs" / "api.md"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
RUNNABLE = ("bash", "python")
SHOWN_ONLY = ("json", "text")  # sample output and notation; anything a reader would run must be bash or python
VENV_BIN = Path(sys.executable).parent

if not (_postgres_available() and _redis_available()):
    if CI:
        pytest.fail("the live docs test needs PostgreSQL and Redis", pytrace=False)
    pytest.skip("the live docs test needs PostgreSQL and Redis", allow_module_level=True)


def guide_blocks() -> list[tuple[str, str]]:
    """Return the guide's fenced blocks as (language, code), in order."""
    return [(lang, code) for lang, code in BLOCK.findall(GUIDE.read_text())]


def wait_until_ready(base_url: str, server: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Poll the readiness probe until it answers 200; fail at once if gunicorn exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"gunicorn exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{base_url}/health/ready/", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # refused while gunicorn binds, or timed out while its workers boot
            pass
        time.sleep(0.1)  # polling a condition (the socket), not standing in for one
    pytest.fail(f"gunicorn did not become ready in {timeout}s:\n{log.read_text()}")


def stop(process: subprocess.Popen) -> None:
    """Stop a process we started: SIGTERM (gunicorn and RQ shut down gracefully), then SIGKILL if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def seed(app) -> dict:
    """The admin the guide names, real plans, a few customers with a billing history, and two tokens."""
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        with acting_as(SYSTEM):
            admin = user_service.create_user("admin@example.com", "Docs Admin", "admin")
            ensure_plans()
            generate(6, seed=9)
            db.session.flush()
            bill_history(today())  # paid and overdue invoices, so the guide's filters and the perf run find some
            _, secret = token_service.create_token(admin.id, "docs test", "read,write,billing", None)
            _, read_secret = token_service.create_token(admin.id, "perf test", "read", None)
        db.session.commit()
        db.engine.dispose()
    return {"token": secret, "read_token": read_secret}


@contextmanager
def serving(env: dict, work: Path) -> Iterator[str]:
    """Run gunicorn (2 sync workers, as deployed) and an RQ worker; yield the base URL; stop both."""
    port = free_port()
    with (work / "gunicorn.log").open("w") as glog, (work / "worker.log").open("w") as wlog:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--timeout", "60", "--graceful-timeout", "10"],
            cwd=ROOT, env=env, stdout=glog, stderr=subprocess.STDOUT)
        worker = subprocess.Popen([sys.executable, "-m", "flask", "rq", "worker"], cwd=ROOT, env=env,
                                  stdout=wlog, stderr=subprocess.STDOUT)
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_until_ready(base_url, server, work / "gunicorn.log")
            yield base_url
        finally:
            stop(server)
            stop(worker)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """gunicorn and an RQ worker on a fresh database, with an SMTP server; yields what the blocks need."""
    name = f"isp_admin_docs_{RUN_ID}"
    database_url = create_database(name)
    queue = f"docs-{RUN_ID}-{uuid.uuid4().hex[:8]}"
    prefix = f"docs-{RUN_ID}"
    work = tmp_path_factory.mktemp("docs")
    app = create_app(app_config(database_url, REDIS_URL, work / "instance", RQ_QUEUE=queue))
    try:
        tokens = seed(app)
        with running_smtp_server() as inbox:
            env = {
                **os.environ,
                "APP_ENV": "development", "SECRET_KEY": "docs-test-secret-key", "LOG_LEVEL": "WARNING",
                "DATABASE_URL": database_url, "REDIS_URL": REDIS_URL, "RQ_QUEUE": queue, "MAIL_URL": inbox.url,
                "CACHE_KEY_PREFIX": f"{prefix}:", "RATELIMIT_KEY_PREFIX": f"{prefix}-rl",
                "FLASK_APP": str(ROOT / "wsgi.py"), "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            }
            with serving(env, work) as base_url:
                yield {"base_url": base_url, "env": env, "app": app, "inbox": inbox, "work": work, **tokens}
    finally:
        with app.app_context():  # the assertions' connections, closed before the database goes
            db.session.remove()
            db.engine.dispose()
        _forget_redis_keys(queue, prefix)
        drop_database(name)


def _forget_redis_keys(queue: str, prefix: str) -> None:
    connection = redis.Redis.from_url(REDIS_URL)
    for pattern in (f"*{queue}*", f"{prefix}*"):
        keys = list(connection.scan_iter(match=pattern, count=1000))
        if keys:
            connection.delete(*keys)


def server_logs(work: Path) -> str:
    """The last lines gunicorn and the RQ worker logged, for a failing block's report."""
    return "\n".join(f"--- {name}\n" + "\n".join((work / name).read_text().splitlines()[-30:])
                     for name in ("gunicorn.log", "worker.log"))


def run_block(index: int, lang: str, code: str, cwd: Path, env: dict) -> str:
    """Run one block (bash with -euo pipefail, python with the venv's interpreter); return its output."""
    if lang == "bash":
        command = ["bash", "-euo", "pipefail", "-c", code]
    else:
        script = cwd / f"block_{index:02d}.py"
        script.write_text(code)
        command = [sys.executable, str(script)]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, (f"docs/api.md block {index} ({lang}) exited {result.returncode}:\n{code}\n"
                                    f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}\n"
                                    f"{server_logs(cwd.parent)}")
    return result.stdout


def test_the_guide_only_fences_runnable_code_as_bash_or_python():
    languages = [lang for lang, _ in guide_blocks()]
    assert set(languages) <= {*RUNNABLE, *SHOWN_ONLY}, languages
    assert languages.count("bash") >= 15 and languages.count("python") >= 2


def test_every_example_in_the_guide_runs_against_a_live_server(live):
    assert shutil.which("curl") and shutil.which("jq"), "the guide's shell examples need curl and jq"
    scratch = live["work"] / "scratch"
    scratch.mkdir()
    env = {**live["env"], "BASE_URL": live["base_url"], "TOKEN": live["token"]}
    outputs = [run_block(i, lang, code, scratch, env)
               for i, (lang, code) in enumerate(guide_blocks()) if lang in RUNNABLE]
    printed = "\n".join(outputs)
    assert "Copy the secret now" in printed  # flask tokens create
    assert "HTTP 304" in printed and "HTTP 404 NOT_FOUND" in printed
    assert "the retry returned the same payment" in printed
    assert "voiding twice: 422 BUSINESS_RULE_VIOLATION" in printed

    with live["app"].app_context():
        for name, email in (("Jane Doe", "jane.doe@example.com"), ("Kamau Hardware Ltd",
                                                                   "accounts@kamau-hardware.example")):
            assert_the_flow_left_its_records(name, email)
        runs = db.session.scalars(select(JobRun).where(JobRun.kind == "generate_monthly_invoices")).all()
        assert len(runs) == 2 and {run.status for run in runs} == {"succeeded"}, [(r.status, r.error) for r in runs]
        token = db.session.scalar(select(ApiToken).where(ApiToken.name == "billing script"))
        assert token.scopes == "read,write,billing" and token.user.email == "admin@example.com"
        assert db.session.scalar(select(func.count()).select_from(IdempotencyKey)) >= 8
    assert sorted(str(m["To"]) for m in live["inbox"].messages) == ["accounts@kamau-hardware.example",
                                                                    "jane.doe@example.com"]
    assert all(any(part.get_filename("").endswith(".pdf") for part in m.iter_attachments())
               for m in live["inbox"].messages)


def assert_the_flow_left_its_records(name: str, email: str) -> None:
    """One customer with a live subscription, a paid and sent invoice, a void one, a kept and a reversed payment."""
    customer = db.session.scalar(select(Customer).where(Customer.name == name))
    assert customer is not None and customer.email == email
    [subscription] = db.session.scalars(select(Subscription).where(Subscription.customer_id == customer.id)).all()
    assert subscription.status == "active"
    invoices = {i.status: i for i in db.session.scalars(select(Invoice).where(Invoice.customer_id == customer.id))}
    assert set(invoices) == {"paid", "void"}, name
    paid, void = invoices["paid"], invoices["void"]
    assert paid.sent_at is not None and paid.amount_paid_cents == paid.total_cents > 0
    assert void.void_reason and void.voided_at is not None
    payments = {p.status: p for p in db.session.scalars(select(Payment).where(Payment.customer_id == customer.id))}
    assert set(payments) == {"completed", "reversed"}, name  # the retried payment was recorded once
    assert payments["completed"].amount_cents == paid.total_cents
    assert payments["reversed"].reversal_reason == "Transfer bounced"


def test_perf_times_the_live_server_over_http(live):
    result = subprocess.run(
        [sys.executable, "-m", "flask", "perf", "test-api-performance", "--url", live["base_url"],
         "--token", live["read_token"], "--requests", "3", "--warmup", "1", "--page-size", "2", "--json"],
        cwd=ROOT, env=live["env"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["mode"] == live["base_url"]
    rows = {row["endpoint"]: row for row in report["endpoints"]}
    assert len(rows) == 14 and "customers: cursor" in rows and "stats: payments" in rows
    for row in rows.values():
        assert row["skipped"] is None and row["errors"] == 0 and row["requests"] == 3, row
        assert 0 < row["p50_ms"] <= row["p95_ms"] <= row["max_ms"], row
        assert row["queries_max"] >= row["queries_median"] >= 1, row

"""Real servers for tests: gunicorn (gthread) on the worker's PostgreSQL database, raw HTTP calls, API tokens.

Shared by the Idempotency-Key tests (tests/api/test_idempotency.py), the rate-limit and graceful-shutdown tests,
and the concurrency suite (tests/concurrency/), which drive the app as production runs it: several worker
processes of several threads each, every request on its own connection.
"""
from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from isp_admin.devserver import free_port
from isp_admin.extensions import db
from isp_admin.services.identity import tokens as token_service
from tests.conftest import ROOT, RUN_ID
from tests.factories import UserFactory

PAYMENTS = "/api/billing/payments/"


def api_token(role: str = "billing", scopes: str = "read,billing", user=None,
              name: str = "test script") -> tuple[dict[str, str], int]:
    """Return the Authorization header of a fresh token with `scopes` (for `user`, or a new user of `role`)."""
    user = user or UserFactory(role=role)
    token, secret = token_service.create_token(user.id, name, scopes, None)
    db.session.commit()
    return {"Authorization": f"Bearer {secret}"}, token.id


def billing_token(user=None) -> tuple[dict[str, str], int]:
    """Return the Authorization header of a fresh read+billing token (for `user`, or a new billing clerk)."""
    return api_token("billing", "read,billing", user=user, name="idempotency test")


def call(base: str, method: str, path: str, body: dict | None = None, headers: dict | None = None,
         timeout: float = 60, raw: bytes | None = None):
    """Send one request on its own connection; return (status, headers, body bytes).

    `body` goes as JSON; `raw` (a form, a signed webhook) goes as it is, its Content-Type in `headers`.
    """
    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        payload = raw if raw is not None else json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=payload, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def wait_until(condition, what: str, timeout: float = 20.0) -> None:
    """Poll `condition` (a database fact no event announces) until it holds, or fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def wait_answering(server: subprocess.Popen, base: str, log, name: str = "gunicorn", timeout: float = 60) -> None:
    """Wait until the server started as `server` answers /health/ at `base`; fail with its log if it exits."""
    def answers() -> bool:
        assert server.poll() is None, f"{name} exited: {log.read_text()[-2000:]}"
        try:
            return call(base, "GET", "/health/")[0] == 200
        except OSError:
            return False

    wait_until(answers, f"{name} to answer", timeout=timeout)


def server_env(backends, **overrides: str) -> dict[str, str]:
    """The environment of a testing server on this worker's database and Redis (rate limits off)."""
    env = {**os.environ, "APP_ENV": "testing", "SECRET_KEY": "test-secret-key-not-for-production",
           "DATABASE_URL": backends["database_url"], "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
           "RATELIMIT_ENABLED": "false", "CACHE_KEY_PREFIX": f"test:{RUN_ID}:", "LOG_LEVEL": "WARNING",
           "RATELIMIT_KEY_PREFIX": f"test-rl:{RUN_ID}"}
    env.pop("REDIS_URL", None)
    if backends["redis_url"]:
        env["REDIS_URL"] = backends["redis_url"]
    env.update(overrides)
    return env


@contextmanager
def gunicorn(backends, log_path, workers: int = 2, threads: int = 8, **env: str) -> Iterator[str]:
    """Run wsgi:app under gunicorn (gthread) on this worker's database; yield its base URL once it answers.

    Extra keyword arguments are environment variables of the server (e.g. RQ_QUEUE="…").
    """
    port = free_port()
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--workers", str(workers), "--worker-class", "gthread",
             "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "--graceful-timeout", "5", "wsgi:app"],
            cwd=ROOT, env=server_env(backends, **env), stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        def answers() -> bool:
            if server.poll() is not None:
                raise AssertionError(f"gunicorn exited: {log_path.read_text()[-2000:]}")
            try:
                return call(base, "GET", "/health/")[0] == 200
            except OSError:
                return False

        wait_until(answers, "gunicorn to answer", timeout=60)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextmanager
def asking_continuously(base: str, path: str = "/health/", clients: int = 4) -> Iterator[dict]:
    """GET `path` from `clients` threads, each request on its own connection, until the block ends.

    Yields the tally, filled in as answers come: {"answered": 200s received, "failures": [status or error, ...]}.
    """
    tally: dict = {"answered": 0, "failures": []}
    done = threading.Event()
    lock = threading.Lock()

    def ask() -> None:
        while not done.is_set():
            try:
                status = call(base, "GET", path, timeout=15)[0]
            except OSError as error:
                with lock:
                    tally["failures"].append(repr(error))
                time.sleep(0.01)  # refused at once: a tight loop would count one gap thousands of times
                continue
            with lock:
                if status == 200:
                    tally["answered"] += 1
                else:
                    tally["failures"].append(status)

    threads = [threading.Thread(target=ask, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield tally
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=30)


def send_together(start: threading.Barrier, base: str, body: dict, headers: dict, _sender: int,
                  path: str = PAYMENTS, method: str = "POST"):
    """Wait until every sender is ready, then send the request (by default: POST the payment)."""
    start.wait(timeout=30)
    return call(base, method, path, body, headers)

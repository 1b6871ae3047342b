"""Losing Redis or PostgreSQL, for real: a redis-server of the test's own is SIGKILLed and started again, and
PostgreSQL is cut off and reconnected through a TCP proxy the test controls.

Without Redis the pages still render (the cache and the rate limiter fall back and say so in the log), jobs are
refused with a clear message and no orphan run, and /health/ready/ names "redis". Without PostgreSQL pages and the
API answer 503 (never a 500 with a stack trace) and readiness names "database". When either comes back, the same
app recovers without a restart.
"""
from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import pytest
import redis
from sqlalchemy import func, make_url, select

from isp_admin import create_app
from isp_admin.config import ConfigError, engine_options, load_config, redis_timeouts
from isp_admin.devserver import free_port
from isp_admin.extensions import db, limiter
from isp_admin.models import JobRun
from isp_admin.services.platform.clock import today
from tests.api.helpers import bearer
from tests.conftest import PASSWORD, FreshContextClient, app_config, clean_context
from tests.factories import CustomerFactory, UserFactory
from tests.gunicorn_helpers import wait_until
from tests.support.network import TcpProxy
from tests.support.processes import kill, start_redis


def log_events(capfd) -> list[dict]:
    """The JSON log lines written to standard error since the last call."""
    events = []
    for line in capfd.readouterr().err.splitlines():
        with suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def messages(events: list[dict], logger: str) -> list[str]:
    """The messages one logger wrote."""
    return [e["event"] for e in events if e.get("logger") == logger]


@contextmanager
def running_app(config: dict) -> Iterator:
    """An app from `config` over an empty database, its context pushed; the shared limiter reset around it."""
    # The limiter is one object per process: start it, and leave it, on its storage rather than its fallback.
    limiter._storage_dead = False
    app = create_app(config)
    app.test_client_class = FreshContextClient
    try:
        with clean_context(app):
            yield app
    finally:
        limiter._storage_dead = False
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def signed_in(app):
    """A client signed in as a new admin."""
    user = UserFactory(role="admin")
    client = app.test_client()
    assert client.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 302
    return client


def timed(app, call, limit: float = 20):
    """Run `call` in an app context of its own thread; return its result and seconds, or fail after `limit`.

    Against a server that never answers, a regression would hang for ever; this way the test fails instead, and
    closing the silent server afterwards frees the stuck thread.
    """
    outcome: dict = {}

    def run():
        started = time.monotonic()
        try:
            with app.app_context():
                outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001  (re-raised in the test's thread)
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), f"still waiting after {limit} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"], outcome["seconds"]


def job_runs() -> int:
    """How many runs are recorded, as committed."""
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(JobRun))


# --- Redis ---------------------------------------------------------------------------------------------------------

def answers(client, customer_id: int, api: dict) -> dict[str, int]:
    """The status of the dashboard, the customer list, a customer's page and an API list."""
    statuses = {path: client.get(path).status_code for path in ("/", "/customers/", f"/customers/{customer_id}")}
    statuses["/api/customers/"] = client.get("/api/customers/", headers=api).status_code
    return statuses


def redis_app_config(backends, redis_url: str, tmp_path) -> dict:
    """An app on `redis_url` for cache, limits and jobs, rate limiting on (generously), logging JSON lines."""
    return app_config(backends["database_url"], redis_url, tmp_path / "instance", LOG_FORMAT="json",
                      LOG_LEVEL="INFO", RATELIMIT_ENABLED=True, RATE_LIMIT_AUTHENTICATED="1000/minute",
                      RQ_QUEUE=f"ops-{uuid.uuid4().hex[:8]}")


def assert_jobs_refused(client, runner: dict, port: int) -> None:
    """Starting a run from the page and from the API says Redis does not answer, and records no run."""
    started = client.post("/billing/run", data={"as_of": today().isoformat()}, follow_redirects=True)
    page = started.get_data(as_text=True)
    assert started.status_code == 200
    assert "The run could not be started" in page and f"127.0.0.1:{port}" in page and "does not answer" in page
    refused = client.post("/api/billing/bulk-generate/", json={}, headers=runner)
    body = refused.get_json()
    assert refused.status_code == 503 and body["error"]["code"] == "EXTERNAL_SERVICE_ERROR"
    assert f"127.0.0.1:{port}" in body["message"] and "no job was queued" in body["message"]
    assert job_runs() == 0  # nothing recorded as "running" that no worker will ever take


def test_with_redis_killed_pages_answer_jobs_refuse_clearly_and_all_recovers_without_a_restart(
        backends, tmp_path, capfd):
    port = free_port()
    redis_process = start_redis(port, tmp_path)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        with running_app(redis_app_config(backends, url, tmp_path)) as app:
            customer_id = CustomerFactory().id
            api, runner = bearer("readonly", "read"), bearer("billing", "read,billing")
            client = signed_in(app)
            all_ok = dict.fromkeys(answers(client, customer_id, api), 200)
            assert answers(client, customer_id, api) == all_ok
            log_events(capfd)

            kill(redis_process)

            assert answers(client, customer_id, api) == all_ok
            assert_jobs_refused(client, runner, port)
            ready = client.get("/health/ready/")
            assert ready.status_code == 503 and ready.get_json()["failing"] == ["redis"]
            assert client.get("/health/live/").status_code == 200
            events = log_events(capfd)
            assert any(m.startswith("cache unreachable") for m in messages(events, "isp_admin.caching"))
            assert "Rate limit storage unreachable - falling back to in-memory storage" in messages(
                events, "flask-limiter")
            assert sum(m.startswith("job queue unreachable") for m in messages(events, "isp_admin.jobs.queue")) == 2
            assert not [e for e in events if e.get("status") == 500 or "exception" in e]

            redis_process = start_redis(port, tmp_path)  # the same address, empty: as after a crash

            assert client.get("/health/ready/").status_code == 200
            queued = client.post("/api/billing/bulk-generate/", json={}, headers=runner)
            assert queued.status_code == 202 and job_runs() == 1
            store = redis.Redis.from_url(url)
            assert store.llen(f"rq:queue:{app.config['RQ_QUEUE']}") == 1
            seen: list[dict] = []

            def back_on_redis() -> bool:
                # The cache tries Redis again every 2 s; the limiter with a back-off (1 s, 2 s, 4 s …).
                assert answers(client, customer_id, api) == all_ok
                seen.extend(log_events(capfd))
                time.sleep(0.1)
                return (any(m.startswith("cache reachable again") for m in messages(seen, "isp_admin.caching"))
                        and "Rate limit storage recovered" in messages(seen, "flask-limiter"))

            wait_until(back_on_redis, "the cache and the rate limiter to use Redis again", timeout=20)
            assert any(b"LIMITER" in key for key in store.scan_iter())  # counting in Redis again
            store.close()
    finally:
        kill(redis_process)


def active_customers(client) -> int:
    """Read the dashboard's count of active customers."""
    page = client.get("/").get_data(as_text=True)
    match = re.search(r"Active customers</div>\s*<div class=\"stat-value\"><a[^>]*>([\d,]+)</a>", page)
    assert match, "the dashboard shows no active-customer count"
    return int(match.group(1).replace(",", ""))


def test_a_redis_cut_off_and_back_serves_no_value_its_outage_left_stale(backends, tmp_path, capfd):
    port = free_port()
    redis_process = start_redis(port, tmp_path)
    proxy = TcpProxy(("127.0.0.1", port))
    config = app_config(backends["database_url"], f"redis://127.0.0.1:{proxy.port}/0", tmp_path / "instance",
                        LOG_FORMAT="json")
    try:
        with running_app(config) as app:
            client = signed_in(app)
            CustomerFactory(name="Before Outage")
            assert "1 customer" in client.get("/customers/").get_data(as_text=True)
            assert active_customers(client) == 1  # the dashboard's figures, now cached in Redis

            proxy.close()  # Redis keeps its data: a network cut, not a crash
            assert client.post("/customers/new", data={"name": "During Outage", "email": "during@example.com"},
                               follow_redirects=True).status_code == 200
            # The list's count is kept per process under the data versions (never in Redis): right at once.
            assert "2 customers" in client.get("/customers/").get_data(as_text=True)
            assert active_customers(client) == 2
            proxy.open()
            seen: list[dict] = []

            def cache_back() -> bool:
                # The invalidation the write could not send would leave "1" in Redis for ten minutes.
                assert active_customers(client) == 2
                seen.extend(log_events(capfd))
                time.sleep(0.1)
                return any(m.startswith("cache reachable again") for m in messages(seen, "isp_admin.caching"))

            wait_until(cache_back, "the cache to use Redis again", timeout=10)
            assert active_customers(client) == 2  # cached again, and right
            assert "2 customers" in client.get("/customers/").get_data(as_text=True)
    finally:
        proxy.close()
        kill(redis_process)


def test_a_redis_that_hangs_costs_a_request_its_socket_timeout_not_forever(backends, tmp_path, capfd):
    # A Redis that takes connections and never answers: a frozen host, or a network that drops packets.
    with socket.create_server(("127.0.0.1", 0), backlog=128) as hung:
        port = hung.getsockname()[1]
        url = f"redis://127.0.0.1:{port}/0"
        timeouts = redis_timeouts(url, 0.25)  # REDIS_SOCKET_TIMEOUT=0.25 (1 s by default): a quicker test
        config = {**redis_app_config(backends, url, tmp_path), "REDIS_SOCKET_TIMEOUT": 0.25,
                  "CACHE_OPTIONS": timeouts, "RATELIMIT_STORAGE_OPTIONS": timeouts}
        with running_app(config) as app:
            customer_id = CustomerFactory().id
            api, runner = bearer("readonly", "read"), bearer("billing", "read,billing")
            client = signed_in(app)

            statuses, pages = timed(app, lambda: answers(client, customer_id, api))
            _, refusals = timed(app, lambda: assert_jobs_refused(client, runner, port))
            ready = client.get("/health/ready/")
            assert ready.status_code == 503 and ready.get_json()["failing"] == ["redis"]

    assert statuses == dict.fromkeys(statuses, 200)
    # Four answers: the cache tries Redis once every 2 s, the limiter backs off after its first failure.
    assert pages < 2, pages
    assert refusals < 2, refusals  # each refusal waits out one probe
    events = log_events(capfd)
    assert any(m.startswith("cache unreachable") for m in messages(events, "isp_admin.caching"))
    assert not [e for e in events if e.get("status") == 500 or "exception" in e]


# --- PostgreSQL ----------------------------------------------------------------------------------------------------

def assert_unavailable_page(response) -> None:
    """A 503 page asking to retry, with no trace of the failure in it."""
    page = response.get_data(as_text=True)
    assert response.status_code == 503 and response.headers["Retry-After"] == "5", page[:300]
    assert "Temporarily unavailable" in page and "try again" in page
    for leak in ("Traceback", "psycopg", "OperationalError", "SELECT", "5432", "connection failed"):
        assert leak not in page


def assert_unavailable_envelope(response) -> None:
    """A 503 in the API envelope: SERVICE_UNAVAILABLE, Retry-After, no trace."""
    body = response.get_json()
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert body["success"] is False and body["error"]["code"] == "SERVICE_UNAVAILABLE" and body["message"]
    assert "psycopg" not in response.get_data(as_text=True) and "SELECT" not in response.get_data(as_text=True)


def test_with_postgres_cut_off_pages_and_api_answer_503_then_recover_without_a_restart(backends, tmp_path, capfd):
    real = make_url(backends["database_url"])
    if real.get_backend_name() != "postgresql":
        pytest.skip("needs PostgreSQL")
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432))
    url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        with running_app(app_config(url, None, tmp_path / "instance", LOG_FORMAT="json")) as app:
            customer_id = CustomerFactory().id  # read now: the test's own session cannot reach the database later
            api = bearer("readonly", "read")
            client, visitor = signed_in(app), app.test_client()
            assert client.get(f"/customers/{customer_id}").status_code == 200
            db.session.commit()  # the test's own session holds no connection through the outage
            log_events(capfd)

            proxy.close()

            started = time.monotonic()
            for path in ("/", "/customers/", f"/customers/{customer_id}"):
                assert_unavailable_page(client.get(path))
            assert_unavailable_page(visitor.post("/login", data={"email": "a@example.com", "password": "x"}))
            assert_unavailable_envelope(client.get("/api/customers/", headers=api))
            assert_unavailable_envelope(client.get(f"/api/customers/{customer_id}/", headers=api))
            assert_unavailable_envelope(client.get("/customers/", headers={"Accept": "application/json"}))
            assert time.monotonic() - started < 5  # refused at once: no request waits on a dead database
            ready = client.get("/health/ready/")
            assert ready.status_code == 503 and ready.get_json()["failing"] == ["database"]
            assert client.get("/health/live/").status_code == 200
            # Prometheus still scrapes (the business gauges wait for the database), so the outage shows there.
            scrape = client.get("/metrics")
            assert scrape.status_code == 200
            assert 'endpoint="customers.detail",method="GET",status="503"' in scrape.get_data(as_text=True)
            events = log_events(capfd)
            outage = [e for e in events if e.get("logger") == "isp_admin.errors"]
            # One line for the outage, not a stack trace per request.
            assert [e["event"].split(";")[0] for e in outage] == ["database unreachable"]
            assert not [e for e in events if "exception" in e or e.get("status") == 500]
            # Each refusal is still one request line (seven refused, the readiness probe, the scrape; liveness is
            # never logged).
            assert [e["status"] for e in events if e.get("logger") == "isp_admin.request"] == [503] * 8 + [200]

            proxy.open()

            assert client.get(f"/customers/{customer_id}").status_code == 200  # the same session, still signed in
            assert client.get("/api/customers/", headers=api).status_code == 200
            assert client.get("/health/ready/").status_code == 200
            back = messages(log_events(capfd), "isp_admin.errors")
            assert len(back) == 1 and back[0].startswith("database reachable again")
            assert "(7 requests refused)" in back[0]
    finally:
        proxy.close()


def test_a_database_that_never_answers_costs_a_request_the_connect_timeout_not_a_hang(backends, tmp_path):
    real = make_url(backends["database_url"])
    if real.get_backend_name() != "postgresql":
        pytest.skip("needs PostgreSQL")
    # A host that takes the connection and then says nothing, as one behind a dead load balancer does.
    with socket.create_server(("127.0.0.1", 0), backlog=64) as black_hole:
        url = real.set(host="127.0.0.1", port=black_hole.getsockname()[1]).render_as_string(hide_password=False)
        options = engine_options(url, {"DATABASE_CONNECT_TIMEOUT": "2"})
        assert options["connect_args"] == {"connect_timeout": 2, "options": "-c timezone=UTC"}
        assert options["pool_pre_ping"] is False  # pinged when idle instead (isp_admin.database.ping_when_idle)
        app = create_app(app_config(url, None, tmp_path / "instance", SQLALCHEMY_ENGINE_OPTIONS=options))
        client = app.test_client()
        response, elapsed = timed(app, lambda: client.get("/api/customers/",
                                                          headers={"Authorization": "Bearer ispa_unknown"}))
    assert_unavailable_envelope(response)
    assert 1.5 < elapsed < 6


def test_a_drained_pool_answers_503_after_the_pool_timeout(backends, tmp_path, capfd):
    real = make_url(backends["database_url"])
    if real.get_backend_name() != "postgresql":
        pytest.skip("needs PostgreSQL")
    options = {**engine_options(backends["database_url"], {}), "pool_size": 1, "max_overflow": 0, "pool_timeout": 1}
    with running_app(app_config(backends["database_url"], None, tmp_path / "instance", LOG_FORMAT="json",
                                SQLALCHEMY_ENGINE_OPTIONS=options)) as app:
        api = bearer("readonly", "read")
        db.session.commit()
        db.session.remove()  # hand the test's connection back: the pool's only one is for the hog below
        log_events(capfd)
        with db.engine.connect() as hog:
            hog.exec_driver_sql("SELECT 1")
            started = time.monotonic()
            response = app.test_client().get("/api/customers/", headers=api)
            waited = time.monotonic() - started
        assert_unavailable_envelope(response)
        assert "too busy" in response.get_json()["message"] and 0.9 < waited < 3
        assert [m.split(";")[0] for m in messages(log_events(capfd), "isp_admin.errors")] == [
            "database connection pool exhausted"]
        assert app.test_client().get("/api/customers/", headers=api).status_code == 200


def test_timeouts_come_from_the_environment_and_suit_each_backend(tmp_path):
    assert engine_options("sqlite:///x.sqlite3", {"DATABASE_CONNECT_TIMEOUT": "2"}) == {"pool_pre_ping": True}
    assert engine_options("postgresql+psycopg://db/app", {}) == {
        "pool_pre_ping": False, "connect_args": {"connect_timeout": 5, "options": "-c timezone=UTC"},
        "pool_timeout": 10, "pool_size": 10}
    assert engine_options("postgresql+psycopg://db/app", {"DATABASE_POOL_SIZE": "16"})["pool_size"] == 16
    for wrong in ("0", "-1", "eight", "", "1001", "8.5"):
        with pytest.raises(ConfigError, match="DATABASE_POOL_SIZE"):
            engine_options("postgresql+psycopg://db/app", {"DATABASE_POOL_SIZE": wrong})
    on_redis = load_config(tmp_path, {"REDIS_URL": "redis://cache:6379/0", "REDIS_SOCKET_TIMEOUT": "0.5"})
    assert on_redis["CACHE_OPTIONS"] == on_redis["RATELIMIT_STORAGE_OPTIONS"] == {
        "socket_connect_timeout": 0.5, "socket_timeout": 0.5}
    assert load_config(tmp_path, {"REDIS_URL": "redis://cache:6379/0"})["REDIS_SOCKET_TIMEOUT"] == 1.0
    # Without Redis the cache is in-process and takes no socket options.
    in_memory = load_config(tmp_path, {})
    assert in_memory["CACHE_OPTIONS"] is None and in_memory["RATELIMIT_STORAGE_OPTIONS"] == {}

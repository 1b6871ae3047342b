"""X-Response-Time and Server-Timing: every response says how long it took and what the database did."""
from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from isp_admin.extensions import db
from tests.api.helpers import bearer
from tests.conftest import clean_context, is_postgres
from tests.factories import PlanFactory

SERVER_TIMING = re.compile(r'^app;dur=(\d+\.\d), db;dur=(\d+\.\d);desc="(\d+) queries"$')
RESPONSE_TIME = re.compile(r"^(\d+\.\d)ms$")


def timing_of(response) -> tuple[float, float, int]:
    """Return (app ms, database ms, queries) from a response's Server-Timing header."""
    match = SERVER_TIMING.match(response.headers["Server-Timing"])
    assert match, response.headers["Server-Timing"]
    app_ms, db_ms, queries = match.groups()
    assert RESPONSE_TIME.match(response.headers["X-Response-Time"])
    return float(app_ms), float(db_ms), int(queries)


def test_a_page_without_the_database_reports_no_queries(client):
    response = client.get("/health/")
    assert response.status_code == 200
    app_ms, db_ms, queries = timing_of(response)
    assert queries == 0 and db_ms == 0.0
    assert float(response.headers["X-Response-Time"][:-2]) == app_ms


def test_the_readiness_probe_reports_its_one_query(client):
    db.session.execute(text("SELECT 1"))  # statements outside a request count for no request
    response = client.get("/health/ready/")
    assert response.status_code == 200
    assert timing_of(response)[2] == 1


def test_an_api_request_reports_exactly_the_statements_it_ran(client, query_counter):
    plan = PlanFactory()
    headers = bearer()
    for path in ("/api/plans/", f"/api/plans/{plan.id}/", "/api/customers/", "/api/billing/stats/invoices/"):
        with query_counter() as statements:
            response = client.get(path, headers=headers)
        assert response.status_code == 200, path
        _, _, queries = timing_of(response)
        assert queries == len(statements) > 0, (path, statements)


def test_errors_and_static_files_are_timed_too(client):
    missing = client.get("/api/customers/999999/", headers=bearer())
    assert missing.status_code == 404
    assert timing_of(missing)[2] >= 1  # the token lookup and the customer read
    with client.get("/static/css/app.css") as static:
        assert static.status_code == 200
        assert timing_of(static)[2] == 0
    unauthenticated = client.get("/api/customers/")
    assert unauthenticated.status_code == 401 and "Server-Timing" in unauthenticated.headers


@pytest.fixture
def timed_app(make_app):
    """An app with two extra routes: one that spends a known time in the database, one that waits on a barrier."""
    app = make_app()
    app.config["barrier"] = None

    def slow():
        db.session.execute(text("SELECT pg_sleep(0.05)" if is_postgres() else "SELECT 1"))
        return {"ok": True}

    def counted(n: int):
        db.session.execute(text("SELECT 1"))
        app.config["barrier"].wait(timeout=10)  # every request is now in flight at once
        for _ in range(n - 1):
            db.session.execute(text("SELECT 1"))
        return {"n": n}

    app.add_url_rule("/_timing/slow", view_func=slow)
    app.add_url_rule("/_timing/<int:n>", view_func=counted)
    with clean_context(app):
        yield app


def test_database_time_is_measured_and_inside_the_request_time(timed_app):
    if not is_postgres():
        pytest.skip("pg_sleep needs PostgreSQL")
    response = timed_app.test_client().get("/_timing/slow")
    app_ms, db_ms, queries = timing_of(response)
    assert queries == 1
    assert 50 <= db_ms <= app_ms


def test_concurrent_requests_never_count_each_others_queries(timed_app):
    counts = [1, 2, 3, 5, 8, 13]
    timed_app.config["barrier"] = threading.Barrier(len(counts))

    def fetch(n: int):
        return timed_app.test_client().get(f"/_timing/{n}")

    with ThreadPoolExecutor(max_workers=len(counts)) as pool:
        responses = list(pool.map(fetch, counts))
    for n, response in zip(counts, responses, strict=True):
        assert response.status_code == 200 and response.get_json() == {"n": n}
        assert timing_of(response)[2] == n

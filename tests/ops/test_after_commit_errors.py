"""Errors raised after the commit never turn a committed write into a 500, through real gunicorn on PostgreSQL.

After the view has committed, Flask still runs the after_request hooks (Flask-Limiter reads its storage for the
rate-limit headers) and the teardowns (Flask-SQLAlchemy's session.remove() rolls back on the connection). Either
failing used to answer 500 for a payment that was recorded — gunicorn's own HTML 500 when it was the teardown.
The client must get the real 201; and when nothing was written because the database is gone, the 503 envelope
(or the 503 page), never gunicorn's page.
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask_limiter._extension import RequestLimit
from sqlalchemy import make_url, select

from isp_admin.extensions import limiter
from isp_admin.models import User
from tests.conftest import PASSWORD, is_postgres
from tests.factories import CustomerFactory, UserFactory
from tests.gunicorn_helpers import PAYMENTS, billing_token, call, gunicorn, wait_until
from tests.support.faults import assert_unavailable, faults_conf
from tests.support.idempotency import KEY, key_rows, payment_body, payments_of
from tests.support.locks import backend_gone, blocked_backend, customer_lock, holding_row_lock, lock_waiters
from tests.support.network import TcpProxy

GUNICORN_500 = b"Internal Server Error"  # gunicorn's own HTML page, sent when the app raises out of WSGI


def assert_recorded_once(answer, customer_id: int) -> None:
    """The real answer: 201 in the JSON envelope, and exactly that one payment committed."""
    status, headers, raw = answer
    assert status == 201 and headers["Content-Type"].startswith("application/json"), raw[:300]
    [payment] = payments_of(customer_id)
    assert payment.id == json.loads(raw)["data"]["id"]


@pytest.fixture(autouse=True)
def _postgres_only(app):
    if not is_postgres():
        pytest.skip("through gunicorn on PostgreSQL")


def test_limiter_headers_failing_after_the_commit_still_answer_the_real_201(backends, tmp_path):
    customer = CustomerFactory()
    headers, _ = billing_token()
    body, sent = payment_body(customer.id), {**headers, KEY: "limited"}
    log_path = tmp_path / "gunicorn.log"

    with gunicorn(backends, log_path, workers=1, threads=4, RATELIMIT_ENABLED="true", LOG_LEVEL="INFO",
                  **faults_conf(tmp_path)) as base:
        first = call(base, "POST", PAYMENTS, body, {**sent, "X-Test-Fault": "limiter"})
        replay = call(base, "POST", PAYMENTS, body, sent)

    assert_recorded_once(first, customer.id)
    assert "X-RateLimit-Limit" not in first[1]  # sent without the headers the storage could not give
    assert replay[0] == 201 and replay[1]["Idempotent-Replayed"] == "true" and replay[2] == first[2]
    assert replay[1]["X-RateLimit-Limit"]  # the limiter itself kept working
    assert [k.state for k in key_rows()] == ["done"]
    assert "Failed to update rate limit headers" in log_path.read_text()


def test_the_limiter_hook_cannot_fail_a_committed_write_even_with_swallowing_off(make_app, monkeypatch, caplog):
    """RATELIMIT_SWALLOW_ERRORS=false means fail closed before the work; after it, the guard still holds."""
    from tests.conftest import clean_context

    with clean_context(make_app(RATELIMIT_ENABLED=True, RATELIMIT_SWALLOW_ERRORS=False)) as app:
        monkeypatch.setattr(limiter, "_swallow_errors", False)  # one limiter per process: set what the app asked
        monkeypatch.setattr(limiter, "_storage_dead", False)

        def unreachable(_self):
            raise ConnectionError("rate-limit storage unreachable (injected)")

        monkeypatch.setattr(RequestLimit, "reset_at", property(unreachable))
        customer = CustomerFactory()
        headers, _ = billing_token()

        with caplog.at_level(logging.ERROR, logger="isp_admin.ratelimit"):
            answer = app.test_client().post(PAYMENTS, json=payment_body(customer.id),
                                            headers={**headers, KEY: "no-swallow"})

        assert answer.status_code == 201 and answer.json["success"] is True
        assert len(payments_of(customer.id)) == 1 and [k.state for k in key_rows()] == ["done"]
        assert "rate-limit response hook failed" in caplog.text
        monkeypatch.setattr(limiter, "_storage_dead", False)


def test_a_teardown_rollback_failing_after_a_committed_write_still_answers_201(backends, tmp_path):
    customer = CustomerFactory()
    headers, _ = billing_token()
    body, sent = payment_body(customer.id), {**headers, KEY: "teardown"}
    log_path = tmp_path / "gunicorn.log"

    with gunicorn(backends, log_path, workers=1, threads=4, **faults_conf(tmp_path)) as base:
        first = call(base, "POST", PAYMENTS, body, {**sent, "X-Test-Fault": "teardown"})
        replay = call(base, "POST", PAYMENTS, body, sent)
        after = call(base, "GET", f"/api/customers/{customer.id}/", headers=headers)  # the worker serves on

    assert GUNICORN_500 not in first[2]
    assert_recorded_once(first, customer.id)
    assert replay[0] == 201 and replay[1]["Idempotent-Replayed"] == "true" and replay[2] == first[2]
    assert after[0] == 200
    assert "could not close the request's database session" in log_path.read_text()


def test_with_the_database_gone_mid_request_the_client_gets_the_503_envelope_or_page(backends, tmp_path):
    """A request whose connection is cut mid-transaction answers 503 from its error handler; then its teardown
    fails too (injected: the session's close raises as a rollback on a dead connection does). Nothing was
    written, and the 503 must still reach the client."""
    customer = CustomerFactory()
    clerk = UserFactory(role="billing")
    headers, _ = billing_token()
    real = make_url(backends["database_url"])
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432))
    through_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    log_path = tmp_path / "gunicorn.log"
    fault = {"X-Test-Fault": "teardown-dead"}
    api = (PAYMENTS, payment_body(customer.id), {**headers, **fault, KEY: "gone"}, customer_lock(customer.id))
    # Signing in updates the user's row (last login), so holding that row holds the page mid-transaction.
    page = ("/login", None, {"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html", **fault},
            select(User.id).where(User.id == clerk.id).with_for_update())
    answers = {}

    try:
        with gunicorn(backends, log_path, workers=1, threads=4, DATABASE_URL=through_proxy,
                      DATABASE_CONNECT_TIMEOUT="1", WTF_CSRF_ENABLED="false", **faults_conf(tmp_path)) as base:
            for name, (path, body, request_headers, lock_statement) in {"api": api, "page": page}.items():
                form = f"email={clerk.email}&password={PASSWORD}".replace("@", "%40")
                with ThreadPoolExecutor(1) as pool, holding_row_lock(lock_statement) as (lock, pid):
                    sent = pool.submit(raw_call if body is None else call, base, "POST", path,
                                       form if body is None else body, request_headers)
                    wait_until(lambda pid=pid: lock_waiters(pid) == 1, f"the {name} request to wait mid-transaction")
                    orphan = blocked_backend(pid)
                    proxy.close()
                    answers[name] = sent.result(timeout=30)
                    lock.rollback()
                wait_until(lambda orphan=orphan: backend_gone(orphan), "the cut-off backend to end")
                proxy.open()
    finally:
        proxy.close()

    for status, _, raw in answers.values():
        assert GUNICORN_500 not in raw and status == 503, raw[:300]
    assert_unavailable(answers["api"])
    status, page_headers, raw = answers["page"]
    assert page_headers["Content-Type"].startswith("text/html") and b"Temporarily unavailable" in raw
    assert payments_of(customer.id) == [] and [k.state for k in key_rows()] == ["in_flight"]  # taken over later
    assert log_path.read_text().count("could not close the request's database session") == 2


def raw_call(base: str, method: str, path: str, form: str, headers: dict):
    """Send a form body as is; return (status, headers, body bytes)."""
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        connection.request(method, path, body=form.encode(), headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()

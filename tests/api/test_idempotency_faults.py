"""Idempotency-Keys survive faults, through real gunicorn on PostgreSQL: a request whose database connection dies,
a database cut that outlasts the request (so even the release cannot run), a worker SIGKILLed mid-request.

Every case ends the same way: the retry with the same key gets the real result at once (or within a second or
two), and exactly one payment exists. The faults are real: a backend terminated with pg_terminate_backend, a TCP
proxy between gunicorn and PostgreSQL that the test cuts, SIGKILL. The one thing injected is a stall: a gunicorn
config (FAULTS_CONF) whose worker hook holds a request just before it inserts its payment, so the test knows the
request is mid-transaction when it strikes.
"""
from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

import pytest
from sqlalchemy import make_url, text

from isp_admin.extensions import db
from tests.conftest import is_postgres
from tests.factories import CustomerFactory
from tests.gunicorn_helpers import PAYMENTS, billing_token, call, gunicorn, wait_until
from tests.support.faults import assert_unavailable, faults_conf
from tests.support.idempotency import KEY, key_rows, payment_body, payments_of
from tests.support.locks import backend_gone, blocked_backend, customer_lock, holding_row_lock, lock_waiters
from tests.support.network import TcpProxy


def retry_until_done(base: str, body: dict, headers: dict, timeout: float = 15.0) -> tuple[tuple, float, int]:
    """Retry the POST as a client honouring 409 would (at once here); return (answer, seconds taken, 409s seen)."""
    started, conflicts = time.monotonic(), 0
    while True:
        answer = call(base, "POST", PAYMENTS, body, headers)
        if answer[0] != 409 or time.monotonic() - started > timeout:
            return answer, time.monotonic() - started, conflicts
        conflicts += 1
        time.sleep(0.05)


def assert_one_fresh_payment(answer, customer_id: int) -> None:
    """The retry ran the work itself (not a replay) and exactly one payment exists: the retry's."""
    status, headers, raw = answer
    assert status == 201 and "Idempotent-Replayed" not in headers, raw[:300]
    [payment] = payments_of(customer_id)
    assert payment.id == json.loads(raw)["data"]["id"]
    assert [k.state for k in key_rows()] == ["done"]


@pytest.fixture(autouse=True)
def _postgres_only(app):
    if not is_postgres():
        pytest.skip("row locks and backends: PostgreSQL only")


def test_a_key_whose_request_lost_its_database_connection_is_reusable_at_once(backends, tmp_path):
    customer = CustomerFactory()
    headers, _ = billing_token()
    body, sent = payment_body(customer.id), {**headers, KEY: "cut-1"}

    with (gunicorn(backends, tmp_path / "gunicorn.log", workers=1, threads=4) as base,
          ThreadPoolExecutor(1) as pool):
        with holding_row_lock(customer_lock(customer.id)) as (lock, pid):
            first = pool.submit(call, base, "POST", PAYMENTS, body, sent)
            wait_until(lambda: lock_waiters(pid) == 1, "the request to wait for the customer row")
            victim = blocked_backend(pid)
            with db.engine.connect() as connection:
                connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
            failed = first.result(timeout=30)
            lock.rollback()
        assert_unavailable(failed)
        assert key_rows() == []  # released on a fresh connection, though the request's own was dead

        retry, seconds, conflicts = retry_until_done(base, body, sent)

    assert conflicts == 0
    assert_one_fresh_payment(retry, customer.id)
    print(f"\nkey reusable {seconds * 1000:.0f} ms after its request lost its connection, 0 x 409")


def test_a_key_left_in_flight_by_a_database_cut_is_taken_over_as_soon_as_the_database_is_back(backends, tmp_path):
    customer = CustomerFactory()
    headers, _ = billing_token()
    body, sent = payment_body(customer.id), {**headers, KEY: "cut-2"}
    real = make_url(backends["database_url"])
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432))
    through_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)

    try:
        with (gunicorn(backends, tmp_path / "gunicorn.log", workers=1, threads=4, DATABASE_URL=through_proxy,
                       DATABASE_CONNECT_TIMEOUT="1") as base, ThreadPoolExecutor(1) as pool):
            with holding_row_lock(customer_lock(customer.id)) as (lock, pid):
                first = pool.submit(call, base, "POST", PAYMENTS, body, sent)
                wait_until(lambda: lock_waiters(pid) == 1, "the request to wait for the customer row")
                orphan = blocked_backend(pid)
                cut_at = time.monotonic()
                proxy.close()  # the request fails, and its release cannot reach the database either
                failed = first.result(timeout=30)
                lock.rollback()  # the orphaned backend gets the row, cannot answer, and ends
            wait_until(lambda: backend_gone(orphan), "PostgreSQL to end the cut-off request's backend")
            assert [k.state for k in key_rows()] == ["in_flight"]  # what the 5-minute stale claim used to strand
            time.sleep(max(0.0, 1.0 - (time.monotonic() - cut_at)))  # the scenario: a one-second cut
            proxy.open()

            retry, seconds, conflicts = retry_until_done(base, body, sent)
    finally:
        proxy.close()

    assert_unavailable(failed)
    assert conflicts == 0
    assert_one_fresh_payment(retry, customer.id)
    print(f"\nafter a 1 s database cut: key reusable {seconds * 1000:.0f} ms after the database was back, 0 x 409")


def test_a_key_whose_worker_was_killed_mid_request_is_usable_within_seconds(backends, tmp_path):
    customer = CustomerFactory()
    headers, _ = billing_token()
    body, sent = payment_body(customer.id), {**headers, KEY: "killed"}
    marker = tmp_path / "stalled"

    with (gunicorn(backends, tmp_path / "gunicorn.log", workers=2, threads=4, **faults_conf(tmp_path)) as base,
          ThreadPoolExecutor(1) as pool):
        first = pool.submit(call, base, "POST", PAYMENTS, body,
                            {**sent, "X-Test-Fault": "stall", "X-Test-Marker": str(marker)})
        wait_until(marker.exists, "the request to stall inside its work transaction, holding its claim")
        wait_until(lambda: marker.read_text() != "", "the stalled worker to write its pid")
        busy = call(base, "POST", PAYMENTS, body, sent)
        assert busy[0] == 409  # the owner lives: its transaction holds the key's row

        killed_at = time.monotonic()
        os.kill(int(marker.read_text()), signal.SIGKILL)
        with suppress(OSError):  # the killed worker's connection is reset (http.client raises an OSError)
            first.result(timeout=30)
        retry, _, conflicts = retry_until_done(base, body, sent)
        seconds = time.monotonic() - killed_at

    assert_one_fresh_payment(retry, customer.id)
    assert seconds < 5
    print(f"\nkey usable {seconds * 1000:.0f} ms after SIGKILL of its worker ({conflicts} x 409 on the way)")

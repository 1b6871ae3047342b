"""Rate limits from the environment: one budget per API user (all their tokens), per signed-in user or per
address; headers saying what is left; 429 as the envelope (or a page) with Retry-After; exact under a concurrent
burst on Redis; and still enforced, in memory, when Redis goes away.

Counters are kept apart by fresh tokens, fresh client addresses, or a Redis server of the test's own (create_app
gives each app its own RATELIMIT_KEY_PREFIX, which Flask-Limiter would otherwise keep from the first app).
"""
from __future__ import annotations

import itertools
import json
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial

import pytest
import redis
from sqlalchemy import event, select, text

from bench.limiter_cost import limiter_pool, redis_round_trips
from isp_admin import create_app
from isp_admin.devserver import free_port, redis_server_binary, serve_in_background
from isp_admin.extensions import db, limiter
from isp_admin.models.users import ApiToken
from isp_admin.services.identity import tokens as token_service
from tests.api.helpers import bearer
from tests.conftest import PASSWORD, RUN_ID, FreshContextClient, app_config, clean_context
from tests.factories import CustomerFactory, UserFactory
from tests.gunicorn_helpers import call, wait_until

_addresses = itertools.count(1)


@pytest.fixture(autouse=True)
def _fresh_user_ids(app):
    """Start this test's user ids past every earlier test's, so their per-user API budgets are never shared.

    Each test empties the tables and restarts the id sequences, while the limit counters outlive it.
    """
    first = next(_user_id_blocks) * 10_000
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("SELECT setval(pg_get_serial_sequence('users', 'id'), :id)"), {"id": first})
    else:
        UserFactory(id=first)  # SQLite numbers the next row after the highest id
    db.session.commit()


_user_id_blocks = itertools.count(1)


def unique_address() -> dict:
    """Environ for a client address no other test uses, so its per-address counters start at zero."""
    n = next(_addresses)
    return {"REMOTE_ADDR": f"10.{uuid.uuid4().int % 250 + 1}.{n // 250 % 250}.{n % 250 + 1}"}


def limited_app(make_app, **limits):
    """An app with rate limiting on (the test default is off) and the given RATE_LIMIT_* values."""
    return make_app(RATELIMIT_ENABLED=True, **limits)


def assert_rate_limited_envelope(response) -> None:
    """A 429 in the API envelope, with a Retry-After within the one-minute window."""
    assert response.status_code == 429
    body = response.get_json()
    assert body["success"] is False and body["error"]["code"] == "RATE_LIMITED" and body["message"]
    assert 0 < int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Remaining"] == "0"


def test_a_token_has_one_budget_across_the_api_and_the_headers_say_what_is_left(app, make_app):
    client = limited_app(make_app, RATE_LIMIT_AUTHENTICATED="3/minute").test_client()
    mine, theirs = bearer(), bearer()

    answers = [client.get(path, headers=mine) for path in ("/api/plans/", "/api/customers/", "/api/billing/invoices/")]
    refused = client.get("/api/subscriptions/", headers=mine)
    other = client.get("/api/plans/", headers=theirs)

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0"]
    for answer in answers:
        assert answer.headers["X-RateLimit-Limit"] == "3"
        assert 0 < int(answer.headers["X-RateLimit-Reset"]) - time.time() <= 61  # epoch seconds of the reset
        assert "Retry-After" not in answer.headers  # only answers that ask the client to wait carry it
    assert_rate_limited_envelope(refused)
    assert refused.headers["X-API-Version"] == "1"
    assert other.status_code == 200 and other.headers["X-RateLimit-Remaining"] == "2"  # another token's budget


def test_a_users_tokens_share_one_budget_and_other_users_keep_theirs(app, make_app):
    client = limited_app(make_app, RATE_LIMIT_AUTHENTICATED="2/minute").test_client()
    user, someone_else = UserFactory(role="readonly"), UserFactory(role="readonly")
    first, second, theirs = bearer(user=user), bearer(user=user), bearer(user=someone_else)

    spent = [client.get("/api/plans/", headers=first) for _ in range(2)]
    with_second = client.get("/api/customers/", headers=second)  # a fresh token, but the same user's budget
    other_user = client.get("/api/plans/", headers=theirs)

    assert [a.status_code for a in spent] == [200, 200]
    assert_rate_limited_envelope(with_second)
    assert other_user.status_code == 200 and other_user.headers["X-RateLimit-Remaining"] == "1"


def test_the_rate_limit_key_costs_no_extra_query(app, make_app):
    limited = limited_app(make_app, RATE_LIMIT_AUTHENTICATED="50/minute")
    headers = bearer()
    with counted_statements(limited) as on:
        assert limited.test_client().get("/api/plans/", headers=headers).status_code == 200
    unlimited = make_app()
    with counted_statements(unlimited) as off:
        assert unlimited.test_client().get("/api/plans/", headers=headers).status_code == 200

    assert len(on) == len(off), (on, off)  # the limiter's lookup of the token's owner is the one auth uses


@contextmanager
def counted_statements(served) -> Iterator[list[str]]:
    """Collect the SQL statements `served` sends to the database inside the block."""
    statements: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        statements.append(statement)

    with served.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_anonymous_requests_are_limited_per_address(app, make_app):
    client = limited_app(make_app, RATE_LIMIT_ANONYMOUS="2/minute", RATE_LIMIT_AUTHENTICATED="5/minute").test_client()
    here, there = unique_address(), unique_address()

    answers = [client.get("/api/plans/", environ_base=here) for _ in range(3)]

    assert [a.status_code for a in answers] == [401, 401, 429]  # refused requests count too
    assert answers[0].headers["X-RateLimit-Limit"] == "2"
    assert_rate_limited_envelope(answers[2])
    assert client.get("/api/plans/", environ_base=there).status_code == 401  # another address, its own budget
    with_token = client.get("/api/plans/", headers=bearer(), environ_base=here)
    assert with_token.status_code == 200 and with_token.headers["X-RateLimit-Limit"] == "5"


def test_random_tokens_do_not_dodge_the_per_address_limit(app, make_app):
    client = limited_app(make_app, RATE_LIMIT_ANONYMOUS="2/minute", RATE_LIMIT_AUTHENTICATED="50/minute").test_client()
    here = unique_address()

    answers = [client.get("/api/plans/", headers={"Authorization": f"Bearer ispa_guess{n}"}, environ_base=here)
               for n in range(3)]  # each guess gets a bucket of its own, but the address's budget is shared

    assert [a.status_code for a in answers] == [401, 401, 429]
    assert answers[2].get_json()["error"]["code"] == "RATE_LIMITED" and answers[2].headers["Retry-After"] == "60"
    valid = client.get("/api/plans/", headers=bearer(), environ_base=here)
    assert valid.status_code == 200  # a real token from the same address still works


def test_pages_answer_429_as_a_page_per_address_and_per_signed_in_user(app, make_app):
    client = limited_app(make_app, RATE_LIMIT_ANONYMOUS="2/minute", RATE_LIMIT_AUTHENTICATED="3/minute").test_client()
    here = unique_address()

    anonymous = [client.get("/login", environ_base=here) for _ in range(3)]

    assert [a.status_code for a in anonymous] == [200, 200, 429]
    page = anonymous[2].get_data(as_text=True)
    assert anonymous[2].mimetype == "text/html" and "Too many requests" in page and "Traceback" not in page
    assert 0 < int(anonymous[2].headers["Retry-After"]) <= 60

    user, elsewhere = UserFactory(role="readonly"), unique_address()
    signed_in = limited_app(make_app, RATE_LIMIT_ANONYMOUS="2/minute",
                            RATE_LIMIT_AUTHENTICATED="3/minute").test_client()
    assert signed_in.post("/login", data={"email": user.email, "password": PASSWORD},
                          environ_base=elsewhere).status_code == 302
    pages = [signed_in.get(path, environ_base=elsewhere) for path in ("/", "/customers/", "/plans/", "/reports/")]

    assert [p.status_code for p in pages] == [200, 200, 200, 429]  # the user's budget, not the address's 2
    assert pages[0].headers["X-RateLimit-Limit"] == "3"
    assert pages[3].mimetype == "text/html" and "Too many requests" in pages[3].get_data(as_text=True)


def test_a_counted_request_costs_one_redis_round_trip_and_an_exempt_one_none(app, make_app, backends):
    # The hit and the window its headers show come back from one script call (limits' own strategy then read the
    # count and the TTL: three round trips); health probes and static files never reach Flask-Limiter.
    if not backends["redis_url"]:
        pytest.skip("the round trips under test are Redis's")
    served = limited_app(make_app, RATE_LIMIT_AUTHENTICATED="50/minute", RATE_LIMIT_LOGIN="50/minute")
    api, staff, anonymous, here = served.test_client(), served.test_client(), served.test_client(), unique_address()
    token, user = bearer(), UserFactory(role="readonly")
    assert staff.post("/login", data={"email": user.email, "password": PASSWORD}, environ_base=here).status_code == 302
    requests = {
        "API list": lambda: api.get("/api/customers/", headers=token),
        "staff page": lambda: staff.get("/customers/", environ_base=here),
        "login POST": lambda: anonymous.post("/login", data={"email": "nobody@example.com", "password": "wrong"},
                                             environ_base=unique_address()),
        "health": lambda: staff.get("/health/live/", environ_base=here),
        "static file": lambda: staff.get("/static/css/app.css", environ_base=here),
    }
    for send in requests.values():
        send().close()  # loads the script into this Redis once

    trips, answers = {}, {}
    for name, send in requests.items():
        with redis_round_trips(limiter_pool()) as counted:
            answers[name] = send()
        trips[name] = counted.count

    assert trips == {"API list": 1, "staff page": 1, "login POST": 1, "health": 0, "static file": 0}
    assert answers["API list"].headers["X-RateLimit-Remaining"] == "48"  # the window the one trip brought back
    assert 0 < int(answers["API list"].headers["X-RateLimit-Reset"]) - time.time() <= 61
    assert answers["staff page"].headers["X-RateLimit-Limit"] == "50"
    assert answers["staff page"].headers["X-RateLimit-Remaining"] == "48"  # the warm-up and this one
    assert answers["login POST"].headers["X-RateLimit-Remaining"] == "49"  # the per-address login budget
    assert "X-RateLimit-Limit" not in answers["health"].headers
    assert "X-RateLimit-Limit" not in answers["static file"].headers


def test_exempt_routes_resolve_no_limit_and_look_up_no_key(app, make_app, monkeypatch):
    # Resolving the default limit asks whether the client is signed in (a user loaded from the database) and the
    # key of an API request looks its token up: neither is wanted for a health probe or a static file.
    served = limited_app(make_app, RATE_LIMIT_AUTHENTICATED="50/minute")
    staff, user, here = served.test_client(), UserFactory(role="readonly"), unique_address()
    assert staff.post("/login", data={"email": user.email, "password": PASSWORD}, environ_base=here).status_code == 302
    asked = []
    monkeypatch.setattr(limiter, "_key_func", lambda: asked.append("key") or "never")
    [default] = limiter.limit_manager._default_limits  # noqa: SLF001  (the one budget per client)
    monkeypatch.setattr(default, "limit_provider", lambda: asked.append("limit") or "50/minute")

    answers = [staff.get(path, headers=bearer(), environ_base=here)
               for path in ("/health/live/", "/static/css/app.css")]

    assert [a.status_code for a in answers] == [200, 200] and asked == []


def token_count(store: redis.Redis, headers: dict) -> int:
    """Read the request counter of the token's owner from the Redis that holds the limits."""
    token_hash = token_service.hash_secret(headers["Authorization"].split()[1])
    owner = db.session.scalar(select(ApiToken.user_id).where(ApiToken.token_hash == token_hash))
    [counter] = store.keys(f"*/test-rl:{RUN_ID}/api-user:{owner}/*")  # this run's counter (RATELIMIT_KEY_PREFIX)
    return int(store.get(counter))


def send_together(start: threading.Barrier, base: str, headers: dict, _sender: int):
    """Wait until every sender is ready, then GET the plan list."""
    start.wait(timeout=30)
    return call(base, "GET", "/api/plans/", headers=headers)


def test_a_concurrent_burst_through_a_threaded_server_is_cut_exactly_at_the_limit(app, make_app, backends):
    if not backends["redis_url"]:
        pytest.skip("the shared counter under test is Redis")
    served = limited_app(make_app, RATE_LIMIT_AUTHENTICATED="20/minute")
    assert served.config["RATELIMIT_STORAGE_URI"] == backends["redis_url"]
    headers, senders = bearer(), 40
    start = threading.Barrier(senders)

    with serve_in_background(served) as base, ThreadPoolExecutor(senders) as pool:
        answers = list(pool.map(partial(send_together, start, base, headers), range(senders)))

    assert Counter(status for status, _, _ in answers) == {200: 20, 429: 20}
    for status, answer_headers, raw in answers:
        assert answer_headers["X-RateLimit-Limit"] == "20"
        if status == 429:
            assert json.loads(raw)["error"]["code"] == "RATE_LIMITED" and int(answer_headers["Retry-After"]) > 0
    # Every attempt was counted once, in Redis (the count a second process would see too).
    store = redis.Redis.from_url(backends["redis_url"])
    assert token_count(store, headers) == senders
    store.close()


@contextmanager
def throwaway_redis(directory) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start a redis-server of our own on a free port; yield it and its URL once it answers; kill it after."""
    binary = shutil.which("redis-server") or str(redis_server_binary())
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--dir", str(directory), "--daemonize", "no", "--loglevel", "warning"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    probe = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(probe.ping())
        except redis.ConnectionError:
            assert process.poll() is None, "redis-server exited at start"
            return False

    try:
        wait_until(answers, "the throwaway redis-server to answer")
        yield process, url
    finally:
        probe.close()
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.fixture
def app_on_own_redis(backends, tmp_path):
    """An app whose REDIS_URL (limits, cache, queue) is a redis-server of this test's own; yields (app, process)."""
    with throwaway_redis(tmp_path) as (process, url):
        app = create_app(app_config(backends["database_url"], url, tmp_path / "instance", RATELIMIT_ENABLED=True,
                                    RATE_LIMIT_AUTHENTICATED="5/minute"))
        app.test_client_class = FreshContextClient
        try:
            with clean_context(app):
                yield app, process
        finally:
            # The limiter is one object for the whole process: put it back on its storage for the next app
            # (Flask-Limiter would otherwise retry the new storage only after a back-off).
            limiter._storage_dead = False
            with app.app_context():
                db.session.remove()
                db.engine.dispose()


def test_with_redis_lost_limits_hold_in_memory_and_pages_still_answer(app_on_own_redis):
    app, redis_process = app_on_own_redis
    assert app.config["RATELIMIT_STORAGE_URI"] == app.config["CACHE_REDIS_URL"] == app.config["REDIS_URL"]
    store = redis.Redis.from_url(app.config["REDIS_URL"])
    client, staff = app.test_client(), app.test_client()
    api, writer = bearer(), bearer("billing", "read,billing")
    customer = CustomerFactory()
    user, here = UserFactory(role="admin"), unique_address()
    assert staff.post("/login", data={"email": user.email, "password": PASSWORD}, environ_base=here).status_code == 302

    before = [client.get("/api/plans/", headers=api).headers["X-RateLimit-Remaining"] for _ in range(2)]
    assert staff.get("/", environ_base=here).status_code == 200
    assert before == ["4", "3"]
    assert token_count(store, api) == 2  # counted in Redis while it was there
    store.close()

    redis_process.send_signal(signal.SIGKILL)
    redis_process.wait()

    after = [client.get("/api/plans/", headers=api) for _ in range(6)]
    # The in-memory fallback starts its own window: a full budget of 5 in this process, then 429.
    assert [a.status_code for a in after] == [200] * 5 + [429]
    assert [a.headers["X-RateLimit-Remaining"] for a in after[:5]] == ["4", "3", "2", "1", "0"]
    assert_rate_limited_envelope(after[5])
    # Pages whose figures are cached in Redis are computed from the database instead; a write whose cache
    # invalidation cannot reach Redis still commits.
    pages = {path: staff.get(path, environ_base=here).status_code for path in ("/", "/customers/", "/reports/")}
    assert pages == {"/": 200, "/customers/": 200, "/reports/": 200}
    paid = client.post("/api/billing/payments/", json={"customer_id": customer.id, "amount_cents": 500,
                                                       "method": "cash"}, headers=writer)
    assert paid.status_code == 201 and paid.headers["X-RateLimit-Remaining"] == "4"


def test_an_app_built_after_another_lost_its_redis_counts_in_redis_again(app_on_own_redis, make_app, backends):
    # One Limiter object serves every app of a process; the first app's dead Redis must not put the next on memory.
    if not backends["redis_url"]:
        pytest.skip("the shared counter under test is Redis")
    lost, redis_process = app_on_own_redis
    redis_process.send_signal(signal.SIGKILL)
    redis_process.wait()
    headers = bearer()
    assert lost.test_client().get("/api/plans/", headers=headers).status_code == 200  # served from the fallback
    assert limiter._storage_dead  # noqa: SLF001  (the state that used to leak)

    served = limited_app(make_app, RATE_LIMIT_AUTHENTICATED="20/minute")
    assert served.test_client().get("/api/plans/", headers=headers).status_code == 200

    store = redis.Redis.from_url(backends["redis_url"])
    assert token_count(store, headers) == 1  # in the shared Redis, where every worker sees it
    store.close()


def test_each_app_counts_under_its_own_key_prefix(app, make_app, backends):
    # Flask-Limiter keeps the first prefix it is given for every later app of the process; two deployments sharing
    # a Redis would then share counters. An app built after one with another prefix counts under its own.
    if not backends["redis_url"]:
        pytest.skip("the counters under test are in Redis")
    other_prefix = f"test-rl-other:{uuid.uuid4().hex[:8]}"
    headers = bearer()
    store = redis.Redis.from_url(backends["redis_url"])
    try:
        first = limited_app(make_app, RATELIMIT_KEY_PREFIX=other_prefix)
        assert first.test_client().get("/api/plans/", headers=headers).status_code == 200
        assert store.keys(f"*/{other_prefix}/api-user:*")

        served = limited_app(make_app, RATE_LIMIT_AUTHENTICATED="20/minute")
        assert served.test_client().get("/api/plans/", headers=headers).status_code == 200
        assert token_count(store, headers) == 1  # under this app's prefix, not the first app's
    finally:
        leftovers = store.keys(f"*/{other_prefix}/*")
        if leftovers:
            store.delete(*leftovers)
        store.close()

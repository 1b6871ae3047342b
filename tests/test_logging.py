"""Structured logs: one JSON line per request with its id, who, what, status, time and queries; slow requests
warned; the request id followed into the jobs it queues; passwords, tokens and card numbers never written."""
from __future__ import annotations

import json
import logging

import pytest

from isp_admin.extensions import db
from isp_admin.services.identity import tokens as token_service
from tests.factories import PASSWORD, CustomerFactory, UserFactory

CARD = "4111 1111 1111 1111"


def json_lines(text: str) -> list[dict]:
    """Parse every JSON log line of captured output (other lines are ignored)."""
    lines = []
    for raw in text.splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines


@pytest.fixture
def logged_app(app, make_app, capfd):
    """An app writing JSON logs to the captured stderr (configured after capture starts)."""
    app = make_app(LOG_FORMAT="json", SLOW_REQUEST_MS=60_000)
    capfd.readouterr()
    return app


def test_each_request_is_one_json_line_with_its_id_actor_status_time_and_queries(logged_app, capfd):
    user = UserFactory(role="admin")
    _, secret = token_service.create_token(user.id, "logs", "read", None)
    db.session.commit()
    token = token_service.list_tokens(user.id)[0]
    response = logged_app.test_client().get("/api/plans/", headers={"Authorization": f"Bearer {secret}",
                                                                    "X-Request-ID": "req-logs-0001"})
    assert response.headers["X-Request-ID"] == "req-logs-0001"

    [line] = [entry for entry in json_lines(capfd.readouterr().err) if entry.get("event") == "request"]
    assert line["request_id"] == "req-logs-0001" and line["level"] == "info"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/api/plans/", 200)
    assert line["token_id"] == token.id and line["user_id"] == user.id
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0
    assert line["queries"] == int(response.headers["Server-Timing"].split('desc="')[1].split(" ")[0])
    assert line["timestamp"].endswith("Z") and line["logger"] == "isp_admin.request"


def test_a_slow_request_is_a_warning(app, make_app, capfd):
    slow = make_app(LOG_FORMAT="json", SLOW_REQUEST_MS=0)
    capfd.readouterr()
    slow.test_client().get("/login")
    [line] = [entry for entry in json_lines(capfd.readouterr().err) if entry.get("path") == "/login"]
    assert line["level"] == "warning" and line["event"] == "slow request" and line["slow_ms"] == 0


def test_passwords_tokens_and_card_numbers_are_never_written(logged_app, capfd):
    client = logged_app.test_client()
    user = UserFactory(role="admin")
    customer = CustomerFactory()
    client.post("/login", data={"email": user.email, "password": PASSWORD})
    client.post("/login", data={"email": user.email, "password": "wrong-" + PASSWORD})
    _, secret = token_service.create_token(user.id, "leak check", "read,write,billing", None)
    db.session.commit()
    headers = {"Authorization": f"Bearer {secret}"}
    client.post("/api/billing/payments/", headers=headers,
                json={"customer_id": customer.id, "amount_cents": 1500, "method": "card", "reference": CARD})
    client.get("/api/plans/", headers={"Authorization": "Bearer ispa_notarealtokenbutlookslikeone"})
    client.get(f"/api/plans/?token={secret}")
    log = logging.getLogger("isp_admin.somewhere")
    log.warning("retrying with password=%s and Authorization: Bearer %s", PASSWORD, secret)
    log.info("card on file", extra={"card_number": CARD, "password": PASSWORD, "cvv": "123"})
    log.error("payment gateway said: card %s declined", CARD)

    written = capfd.readouterr().err
    assert json_lines(written), "nothing was logged: the test would prove nothing"
    for secret_text in (PASSWORD, secret, secret[5:], CARD, CARD.replace(" ", ""), "ispa_notarealtokenbutlookslikeone"):
        assert secret_text not in written, secret_text
    assert "[redacted]" in written


def test_a_job_logs_under_the_request_id_that_queued_it(app, make_app, backends):
    import os
    import subprocess
    import sys
    import uuid

    import redis

    from tests.conftest import ROOT
    from tests.jobs.conftest import BASE_ENV, _drop_redis_keys

    if not backends["redis_url"]:
        pytest.skip("needs Redis")
    queue = f"test-logs-{uuid.uuid4().hex[:8]}"
    queuing = make_app(RQ_QUEUE=queue, LOG_FORMAT="json")
    user = UserFactory(role="billing")
    _, secret = token_service.create_token(user.id, "job logs", "read,billing", None)
    db.session.commit()
    try:
        response = queuing.test_client().post("/api/billing/bulk-generate/", json={},
                                          headers={"Authorization": f"Bearer {secret}", "X-Request-ID": "req-job-4242"})
        assert response.status_code == 202, response.data
        env = {**os.environ, **BASE_ENV, "DATABASE_URL": backends["database_url"], "REDIS_URL": backends["redis_url"],
               "RQ_QUEUE": queue, "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
        worker = subprocess.run([sys.executable, "-m", "flask", "rq", "worker", "--burst"], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=120)
        assert worker.returncode == 0, worker.stderr[-2000:]
        lines = json_lines(worker.stderr)
        started = [entry for entry in lines if entry.get("event") == "job started"]
        assert started and {entry["request_id"] for entry in started} == {"req-job-4242"}
        assert any(entry.get("event") == "job finished" and entry["ok"] is True for entry in lines)
    finally:
        _drop_redis_keys(backends["redis_url"], queue)
        redis.Redis.from_url(backends["redis_url"]).close()


def _scrub_every_pattern(text: str) -> str:
    from isp_admin.observability.logs import SECRET_IN_TEXT

    for pattern, replacement in SECRET_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


SECRETISH = ["Bearer abc.DEF-123", "bEaReR\tx", "ispa_0123456789abcdef", "PassWord: hunter2", "passwd=x",
             "SECRET =s3cr3t", "token:abc", CARD, "4111-1111-1111-1111", "4111111111111", "1234567890123456789",
             "/api/plans/?token=ispa_zzzzzzzzzzzz", "a\u00a0password=b", "TOKEN\n=x"]


@pytest.mark.parametrize("text", [*SECRETISH, "GET", "/api/customers/?page=2", "customers.index", "127.0.0.1",
                                  "0123456789ab", "1 2 3 4 5 6 7 8 9 0 1 2", "12345678901234567890", "", "ß" * 50])
def test_the_quick_check_before_redaction_never_lets_a_secret_through(text):
    from isp_admin.observability.logs import _scrub_text

    assert _scrub_text(text) == _scrub_every_pattern(text)
    assert _scrub_text(f"before {text} after") == _scrub_every_pattern(f"before {text} after")
    if text in SECRETISH:
        assert _scrub_text(text) != text, "the fixture is a secret the patterns redact"


def test_the_quick_check_agrees_with_the_patterns_on_generated_text():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from isp_admin.observability.logs import _scrub_text

    pieces = st.sampled_from(["bearer ", "Bearer\t", "ispa_", "password", "passwd", "secret", "token", "=", ": ",
                              "1", "4111 ", "-", " ", "x", "_", "PASSWORD", "Token"])

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.one_of(pieces, st.text(max_size=4)), max_size=25).map("".join))
    def agree(text):
        assert _scrub_text(text) == _scrub_every_pattern(text)

    agree()

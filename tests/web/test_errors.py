"""Error pages: generic, with the request id, never internals; JSON for clients that ask for it."""
from __future__ import annotations

import re
import uuid
from contextlib import suppress
from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from isp_admin.extensions import db
from tests.factories import CustomerFactory

INTERNALS = ("Traceback", 'File "', ".py", "site-packages", "werkzeug", "sqlalchemy", "RuntimeError")


def assert_generic_error_page(response, status: int) -> str:
    """The response is the HTML error page for `status`, naming its request id and nothing internal."""
    assert response.status_code == status
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    request_id = response.headers["X-Request-ID"]
    assert f"<code>{request_id}</code>" in page
    assert f'<p class="display-4 text-body-secondary">{status}</p>' in page
    for marker in INTERNALS:
        assert marker not in page, marker
    return page


def test_bad_request_page(client, login):
    login("readonly")
    response = client.get("/customers/?status=no-such-status")
    assert_generic_error_page(response, 400)


def test_malformed_list_cursor_is_a_client_error(client, login):
    login("readonly")
    CustomerFactory()
    response = client.get("/customers/?after=garbage")
    assert 400 <= response.status_code < 500
    assert_generic_error_page(response, response.status_code)


def test_forbidden_page(client, login):
    login("readonly")
    page = assert_generic_error_page(client.get("/customers/new"), 403)
    assert "Your role does not allow this." in page


def test_not_found_page(client):
    assert_generic_error_page(client.get("/no/such/page"), 404)


def test_unknown_record_is_not_found(client, login):
    login("readonly")
    assert_generic_error_page(client.get("/customers/999999"), 404)
    assert_generic_error_page(client.get("/subscriptions/999999"), 404)


def test_method_not_allowed_page(client):
    response = client.get("/logout")
    assert_generic_error_page(response, 405)
    assert response.headers["Allow"].split(", ").count("POST") == 1


def test_too_many_requests_page(make_app):
    app = make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_LOGIN="2/minute", RATELIMIT_KEY_PREFIX=f"rl-{uuid.uuid4().hex}")
    client = app.test_client()
    attempt = {"email": "nobody@isp.example", "password": "wrong password"}
    assert [client.post("/login", data=attempt).status_code for _ in range(2)] == [200, 200]

    response = client.post("/login", data=attempt)

    page = assert_generic_error_page(response, 429)
    assert "Too many requests" in page
    assert int(response.headers["Retry-After"]) > 0


@pytest.fixture
def exploding_app(make_app):
    """An app with a view that leaves the database transaction broken and then raises."""
    app = make_app(PROPAGATE_EXCEPTIONS=False)

    def explode():
        with suppress(ProgrammingError):
            db.session.execute(text("SELECT * FROM no_such_table"))  # aborts the PostgreSQL transaction
        raise RuntimeError("secret internals")

    app.add_url_rule("/explode", "explode", explode)
    return app


def test_server_error_page_hides_the_exception(exploding_app):
    client = exploding_app.test_client()
    # One app context around both requests, as a worker's session outlives one failed request.
    with exploding_app.app_context():
        page = assert_generic_error_page(client.get("/explode"), 500)
        assert "secret internals" not in page
        assert "could not complete the request" in page

        assert db.session.execute(text("SELECT 1")).scalar() == 1
        assert client.get("/health/ready/").status_code == 200


def test_not_found_answers_json_to_json_clients(client):
    response = client.get("/no/such/page", headers={"Accept": "application/json"})

    assert response.status_code == 404
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"success", "message", "error", "timestamp"}
    assert body["success"] is False
    assert body["message"]
    assert body["error"] == {"code": "NOT_FOUND", "details": {}}
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", body["timestamp"])
    datetime.fromisoformat(body["timestamp"])


def test_a_valid_incoming_request_id_is_echoed(client):
    response = client.get("/no/such/page", headers={"X-Request-ID": "lb-7f3a.42:eu-west_1"})

    assert response.headers["X-Request-ID"] == "lb-7f3a.42:eu-west_1"
    assert "<code>lb-7f3a.42:eu-west_1</code>" in response.get_data(as_text=True)


@pytest.mark.parametrize("incoming", ["x" * 300, "has spaces in it", "<script>alert(1)</script>", "tab\tinside", ""],
                         ids=["too-long", "spaces", "markup", "tab", "empty"])
def test_an_invalid_incoming_request_id_is_replaced(client, incoming):
    response = client.get("/no/such/page", headers={"X-Request-ID": incoming})

    generated = response.headers["X-Request-ID"]
    assert generated != incoming
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert f"<code>{generated}</code>" in response.get_data(as_text=True)


@pytest.mark.parametrize("incoming", ["abc-123\n", "abc\r\nSet-Cookie: x=1"], ids=["trailing-newline", "injection"])
def test_a_request_id_with_a_line_break_is_replaced(client, incoming):
    # The test client refuses such headers, so put it in the WSGI environ as a lax proxy would.
    response = client.get("/no/such/page", environ_base={"HTTP_X_REQUEST_ID": incoming})

    assert response.status_code == 404
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    assert "Set-Cookie" not in response.headers or "x=1" not in response.headers["Set-Cookie"]


def test_every_response_gets_a_fresh_request_id(client):
    first = client.get("/health/").headers["X-Request-ID"]
    second = client.get("/health/").headers["X-Request-ID"]
    assert first != second


@pytest.mark.parametrize("path", ["/customers/99999999999", "/invoices/2147483648", "/payments/0",
                                  "/plans/99999999999999999999/edit", "/subscriptions/-1"])
def test_an_id_out_of_range_is_a_404_page_not_a_database_error(client, login, path):
    login("admin")
    response = client.get(path)
    assert response.status_code == 404 and response.mimetype == "text/html"

"""Tokens, headers and response-envelope checks for API tests."""
from __future__ import annotations

import re

from isp_admin.extensions import db
from isp_admin.services.identity import tokens as token_service
from tests.factories import UserFactory

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def bearer(role: str = "readonly", scopes: str = "read", expires_at=None, user=None) -> dict[str, str]:
    """Create a user of `role` with a token and return the Authorization header that sends it."""
    user = user or UserFactory(role=role)
    _, secret = token_service.create_token(user.id, "test script", scopes, expires_at)
    db.session.commit()
    return {"Authorization": f"Bearer {secret}"}


def assert_error(response, status: int, code: str) -> dict:
    """Assert an error envelope with `status` and `code`; return the parsed body."""
    assert response.status_code == status, response.data[:500]
    assert response.content_type == "application/json"
    body = response.get_json()
    assert set(body) == {"success", "message", "error", "timestamp"}
    assert body["success"] is False and body["message"]
    assert body["error"]["code"] == code and isinstance(body["error"]["details"], dict)
    assert TIMESTAMP.match(body["timestamp"])
    assert response.headers["X-API-Version"] == "1"
    return body


def assert_ok(response, status: int = 200) -> dict:
    """Assert a success envelope with `status` and return its data."""
    assert response.status_code == status, response.data[:500]
    body = response.get_json()
    assert set(body) == {"success", "message", "data", "timestamp"}
    assert body["success"] is True and body["message"] and TIMESTAMP.match(body["timestamp"])
    return body["data"]

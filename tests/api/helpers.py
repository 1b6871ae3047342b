"""Tokens and headers for API tests."""
from __future__ import annotations

from isp_admin.extensions import db
from isp_admin.services.identity import tokens as token_service
from tests.factories import UserFactory


def bearer(role: str = "readonly", scopes: str = "read", expires_at=None, user=None) -> dict[str, str]:
    """Create a user of `role` with a token and return the Authorization header that sends it."""
    user = user or UserFactory(role=role)
    _, secret = token_service.create_token(user.id, "test script", scopes, expires_at)
    db.session.commit()
    return {"Authorization": f"Bearer {secret}"}

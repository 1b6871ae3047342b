"""Staff manage their own API tokens at /account/tokens; the secret is shown once."""
from __future__ import annotations

import hashlib
import re

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import ApiToken
from isp_admin.services.identity import tokens as token_service
from tests.factories import UserFactory


def create(client, scopes=("read",), name="nightly export", days="90"):
    return client.post("/account/tokens", data={"name": name, "scopes": list(scopes), "expires_days": days})


def test_a_new_token_is_shown_once_and_listed_by_prefix(client, login):
    user = login("support")
    response = create(client, scopes=("read", "write"))
    assert response.status_code == 200
    secret = re.search(r'value="(ispa_[^"]+)"', response.text).group(1)
    token = db.session.scalar(select(ApiToken))
    assert token.user_id == user.id and token.scopes == "read,write"
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert "not shown again" in response.text

    page = client.get("/account/tokens")
    assert secret not in page.text
    assert f"{token.prefix}…" in page.text and "nightly export" in page.text and "read, write" in page.text


def test_a_readonly_user_cannot_create_a_write_or_billing_token(client, login):
    login("readonly")
    for scopes in (("write",), ("read", "billing")):
        response = create(client, scopes=scopes)
        assert response.status_code == 422
        assert "cannot create a token with" in response.text
    assert db.session.scalar(select(ApiToken)) is None


def test_the_form_needs_a_name_and_a_scope(client, login):
    login("admin")
    assert create(client, scopes=(), name="").status_code == 200
    assert db.session.scalar(select(ApiToken)) is None


def test_one_sees_and_revokes_only_ones_own_tokens(client, login):
    user = login("billing")
    other = UserFactory(role="billing")
    mine, _ = token_service.create_token(user.id, "mine", "read", None)
    theirs, _ = token_service.create_token(other.id, "theirs", "read", None)
    db.session.commit()

    page = client.get("/account/tokens")
    assert "mine" in page.text and "theirs" not in page.text

    assert client.post(f"/account/tokens/{theirs.id}/revoke").status_code == 403
    response = client.post(f"/account/tokens/{mine.id}/revoke")
    assert response.status_code == 302
    assert mine.revoked_at is not None and theirs.revoked_at is None
    assert "revoked" in client.get("/account/tokens").text

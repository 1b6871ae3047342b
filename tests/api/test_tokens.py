"""API tokens: the secret is shown once, stored hashed, scoped by role, revocable and expiring."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import select

from isp_admin.errors import Forbidden, Invalid
from isp_admin.extensions import db
from isp_admin.models import ApiToken, AuditEvent
from isp_admin.models.base import utcnow
from isp_admin.services.identity import tokens as token_service
from tests.factories import UserFactory


def make_token(user, scopes="read", expires_at=None):
    token, secret = token_service.create_token(user.id, "script", scopes, expires_at)
    db.session.commit()
    return token, secret


def test_a_token_is_stored_hashed_and_shown_once(app):
    user = UserFactory(role="billing")
    token, secret = make_token(user, "billing,read")
    assert secret.startswith("ispa_") and len(secret) > 40
    assert token.prefix == secret[:12]
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in {token.token_hash, token.prefix, token.name}
    assert token.scopes == "read,billing"
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "token.create"))
    assert "token_hash" not in event.after


@pytest.mark.parametrize(("role", "scopes", "allowed"), [
    ("readonly", "read", True), ("readonly", "write", False), ("readonly", "billing", False),
    ("support", "read,write", True), ("support", "billing", False),
    ("billing", "read,write,billing", True), ("admin", "read,write,billing", True),
])
def test_a_token_never_holds_more_than_its_owners_role(app, role, scopes, allowed):
    user = UserFactory(role=role)
    if allowed:
        make_token(user, scopes)
    else:
        with pytest.raises(Invalid) as caught:
            token_service.create_token(user.id, "script", scopes, None)
        assert "scopes" in caught.value.details


def test_unknown_or_empty_scopes_are_refused(app):
    user = UserFactory(role="admin")
    for scopes in ("", "read,delete", "admin"):
        with pytest.raises(Invalid):
            token_service.create_token(user.id, "script", scopes, None)


def test_authenticate_tells_unknown_revoked_expired_and_inactive_apart(app):
    now = utcnow()
    user = UserFactory(role="support")
    _, live = make_token(user)
    revoked, revoked_secret = make_token(user)
    token_service.revoke_token(revoked.id, user.id)
    _, expired = make_token(user, expires_at=now - timedelta(days=1))
    db.session.commit()

    assert token_service.authenticate(live, now).user_id == user.id
    messages = set()
    for secret in ("ispa_not-a-token", revoked_secret, expired):
        with pytest.raises(token_service.TokenRejected) as caught:
            token_service.authenticate(secret, now)
        messages.add(caught.value.message)
    assert len(messages) == 3
    assert any("revoked" in m for m in messages) and any("expired" in m for m in messages)

    user.active = False
    db.session.commit()
    with pytest.raises(token_service.TokenRejected, match="deactivated"):
        token_service.authenticate(live, now)


def test_last_used_is_written_at_most_once_a_minute(app):
    now = utcnow()
    token, secret = make_token(UserFactory())

    def last_used():
        return db.session.scalar(select(ApiToken.last_used_at).where(ApiToken.id == token.id))

    token_service.authenticate(secret, now)
    assert last_used() == now
    token_service.authenticate(secret, now + timedelta(seconds=30))
    assert last_used() == now
    token_service.authenticate(secret, now + timedelta(seconds=61))
    assert last_used() == now + timedelta(seconds=61)


def test_only_the_owner_or_an_admin_revokes(app):
    owner, other, admin = UserFactory(role="support"), UserFactory(role="billing"), UserFactory(role="admin")
    token, _ = make_token(owner)
    with pytest.raises(Forbidden):
        token_service.revoke_token(token.id, other.id)
    token_service.revoke_token(token.id, admin.id)
    db.session.commit()
    assert token.revoked_at is not None
    assert db.session.scalar(select(AuditEvent.action).where(AuditEvent.entity_id == token.id,
                                                              AuditEvent.action == "token.revoke"))


def test_list_tokens_shows_only_ones_own(app):
    owner, other = UserFactory(), UserFactory()
    mine, _ = make_token(owner)
    make_token(other)
    assert [t.id for t in token_service.list_tokens(owner.id)] == [mine.id]


def test_the_cli_prints_the_secret_once_and_revokes(app, runner):
    user = UserFactory(role="support")
    result = runner.invoke(args=["tokens", "create", "--email", user.email, "--name", "backup",
                                 "--scopes", "read,write", "--expires-days", "90"])
    assert result.exit_code == 0, result.output
    secret = result.output.strip().splitlines()[-1]
    token = db.session.scalar(select(ApiToken))
    assert token.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert token.scopes == "read,write"
    assert timedelta(days=89) < token.expires_at - utcnow() <= timedelta(days=90)

    refused = runner.invoke(args=["tokens", "create", "--email", user.email, "--name", "x", "--scopes", "billing"])
    assert refused.exit_code != 0 and "cannot create a token with billing" in refused.output

    result = runner.invoke(args=["tokens", "revoke", "--id", str(token.id)])
    assert result.exit_code == 0, result.output
    db.session.expire_all()
    assert token.revoked_at is not None

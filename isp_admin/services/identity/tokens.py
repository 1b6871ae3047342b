"""API tokens: create (the secret is shown once), revoke, list, and authenticate a bearer secret."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from isp_admin.errors import AppError, Forbidden, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import User
from isp_admin.models.base import utcnow
from isp_admin.models.users import TOKEN_SCOPES, ApiToken
from isp_admin.permissions import PERMISSIONS
from isp_admin.services.platform import audit, versions

SECRET_PREFIX = "ispa_"  # noqa: S105  (a public marker that makes leaked tokens easy to spot, not a secret)
DISPLAY_PREFIX_LENGTH = 12
# The permission a token scope stands for: the owner's role must hold it, now and at every request.
SCOPE_PERMISSIONS = {"read": "view", "write": "customers.edit", "billing": "billing.edit", "health": "health.view"}
LAST_USED_GRANULARITY = timedelta(minutes=1)  # at most one write per token per minute, not one per request


class TokenRejected(AppError):
    """The bearer secret does not authenticate (unknown, revoked, expired, or its owner is inactive)."""

    status = 401
    code = "AUTHENTICATION_REQUIRED"


def hash_secret(secret: str) -> str:
    """Return the stored form of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(scopes) -> list[str]:
    """Return the scopes from a comma-separated string or a list, in canonical order, or raise Invalid."""
    names = scopes.split(",") if isinstance(scopes, str) else list(scopes)
    names = {name.strip() for name in names if name and name.strip()}
    unknown = names - set(TOKEN_SCOPES)
    if not names or unknown:
        raise Invalid("Choose one or more scopes.",
                      {"scopes": f"Use a subset of {', '.join(TOKEN_SCOPES)}."})
    return [scope for scope in TOKEN_SCOPES if scope in names]


def role_allows_scope(role: str, scope: str) -> bool:
    """Return whether a user of `role` may hold (and use) a token with `scope`."""
    return role in PERMISSIONS[SCOPE_PERMISSIONS[scope]]


def allowed_scopes(role: str) -> list[str]:
    """Return the scopes a user of `role` may give a token."""
    return [scope for scope in TOKEN_SCOPES if role_allows_scope(role, scope)]


def create_token(user_id: int, name: str, scopes, expires_at: datetime | None) -> tuple[ApiToken, str]:
    """Create a token for a user; return it with its secret, which is never stored or shown again."""
    user = db.session.get(User, user_id)
    if user is None or not user.active:
        raise NotFound("No such active user.")
    name = (name or "").strip()
    if not name or len(name) > 120 or "\x00" in name:
        raise Invalid("Please name the token.", {"name": "Required, up to 120 characters."})
    scope_list = parse_scopes(scopes)
    beyond = [scope for scope in scope_list if not role_allows_scope(user.role, scope)]
    if beyond:
        raise Invalid("Your role does not allow these scopes.",
                      {"scopes": f"A {user.role} user cannot create a token with {', '.join(beyond)}."})
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name, prefix=secret[:DISPLAY_PREFIX_LENGTH],
                     token_hash=hash_secret(secret), scopes=",".join(scope_list), expires_at=expires_at)
    db.session.add(token)
    db.session.flush()
    audit.record("token.create", token, after=audit.snapshot(token, exclude=("token_hash", "created_at")))
    return token, secret


def revoke_token(token_id: int, acting_user_id: int | None) -> ApiToken:
    """Revoke a token; only its owner or an admin may (None: the system, from the shell)."""
    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise NotFound("No such token.")
    if acting_user_id is not None and token.user_id != acting_user_id:
        actor = db.session.get(User, acting_user_id)
        if actor is None or actor.role != "admin":
            raise Forbidden("Only the token's owner or an admin can revoke it.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        db.session.flush()
        audit.record("token.revoke", token, before={"revoked_at": None},
                     after={"revoked_at": token.revoked_at.isoformat()})
    return token


def list_tokens(user_id: int) -> list[ApiToken]:
    """Return a user's tokens, newest first."""
    return list(db.session.scalars(
        select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id.desc())))


# The lookup and the once-a-minute last_used_at stamp in one statement: the stamp (a data-modifying CTE, run once
# whatever the SELECT reads) touches only a live token of an active owner whose stamp is a minute old, so a list
# request stays within its statement budget in the minute the stamp falls due too. The SELECT sees the row as it
# was before the stamp; `stamped` says whether there is something to commit.
_TOKEN_SQL = ("WITH stamp AS (UPDATE api_tokens SET last_used_at = %(now)s FROM users "  # noqa: S608
              "WHERE api_tokens.token_hash = %(token_hash)s AND users.id = api_tokens.user_id AND users.active "
              "AND api_tokens.revoked_at IS NULL "
              "AND (api_tokens.expires_at IS NULL OR api_tokens.expires_at > %(now)s) "
              "AND (api_tokens.last_used_at IS NULL OR api_tokens.last_used_at <= %(stale)s) RETURNING 1) "
              "SELECT t.id, t.user_id, t.prefix, t.scopes, t.revoked_at, t.expires_at, t.last_used_at, u.email, "
              f"u.role, u.active, {versions.column_sql()} AS data_versions, EXISTS (SELECT 1 FROM stamp) AS stamped "
              "FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = %(token_hash)s")


@dataclass(frozen=True)
class TokenOwner:
    """What a request needs of a token's owner."""

    id: int
    email: str
    role: str
    active: bool


@dataclass(frozen=True)
class AuthenticatedToken:
    """A live token as one request sees it: plain values read in one row, not ORM objects."""

    id: int
    user_id: int
    prefix: str
    scopes: str
    user: TokenOwner


def authenticate(secret: str, now: datetime) -> AuthenticatedToken:
    """Return the live token for a bearer secret (with its owner), or raise TokenRejected.

    Every API request runs this: one plain row (token, owner and, on PostgreSQL, the data versions the lists and
    ETags key on), no ORM identity map; last_used_at is written at most once a minute.
    """
    t, u = ApiToken.__table__.c, User.__table__.c
    if versions.enabled():
        # PostgreSQL: the statement as text, run by the driver. Building and cache-keying the select cost twice
        # what the round trip does (~0.5 ms against ~0.2 ms of CPU), on every API request.
        row = db.session.connection().exec_driver_sql(_TOKEN_SQL, {
            "token_hash": hash_secret(secret), "now": now, "stale": now - LAST_USED_GRANULARITY}).first()
        versions.remember(row.data_versions if row else None)
        if row is not None and row.stamped:
            db.session.info["token_last_used_written"] = True  # the caller commits it
    else:
        row = db.session.execute(
            select(t.id, t.user_id, t.prefix, t.scopes, t.revoked_at, t.expires_at, t.last_used_at, u.email, u.role,
                   u.active).join_from(ApiToken.__table__, User.__table__, u.id == t.user_id)
            .where(t.token_hash == hash_secret(secret))).first()
    if row is None:
        raise TokenRejected("The API token is not valid.")
    if row.revoked_at is not None:
        raise TokenRejected("The API token has been revoked.")
    if row.expires_at is not None and row.expires_at <= now:
        raise TokenRejected(f"The API token expired on {row.expires_at:%Y-%m-%d %H:%M} UTC.")
    if not row.active:
        raise TokenRejected("The API token's owner is deactivated.")
    if not versions.enabled() and (row.last_used_at is None or now - row.last_used_at >= LAST_USED_GRANULARITY):
        db.session.execute(update(ApiToken.__table__).where(t.id == row.id).values(last_used_at=now))
        db.session.info["token_last_used_written"] = True  # the caller commits it, whatever the request does next
    return AuthenticatedToken(row.id, row.user_id, row.prefix, row.scopes,
                              TokenOwner(row.user_id, row.email, row.role, row.active))

"""Staff users, their API tokens and the tokens' idempotency keys."""
from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from isp_admin.extensions import db
from isp_admin.models.base import UTCDateTime, in_list, utcnow

ROLES = ("admin", "billing", "support", "readonly")
TOKEN_SCOPES = ("read", "write", "billing", "health")


class User(UserMixin, db.Model):
    """A member of the ISP's staff who signs in to the panel."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(in_list("role", ROLES), name="role"),
        # Emails are stored lower-cased, so the plain unique constraint is case-insensitive.
        CheckConstraint("email = lower(email)", name="email_lowercase"),
        CheckConstraint("failed_logins >= 0", name="failed_logins_non_negative"),
        CheckConstraint("session_version >= 1", name="session_version_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(default=True, server_default=true())
    failed_logins: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    session_version: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    @property
    def is_active(self) -> bool:
        """Deactivated staff cannot sign in or keep a session."""
        return self.active

    def get_id(self) -> str:
        """Bind the session to the session version, so bumping it signs out every session."""
        return f"{self.id}:{self.session_version}"

    def is_locked(self, now: datetime) -> bool:
        """Return whether repeated failures have locked the account at `now`."""
        return self.locked_until is not None and self.locked_until > now


class SignInThrottle(db.Model):
    """Failed sign-ins for one typed email from one client address, and until when that address must wait.

    Keyed by the email as typed (normalised), not by a user: an unknown email is throttled exactly like a known
    one, so the throttle cannot tell an attacker which accounts exist. The owner at another address has no row.
    """

    __tablename__ = "sign_in_throttles"
    __table_args__ = (
        UniqueConstraint("email", "client_address", name="uq_sign_in_throttles_email_client"),
        CheckConstraint("failures >= 0", name="failures_non_negative"),
        Index("ix_sign_in_throttles_last_failure", "last_failure_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    client_address: Mapped[str] = mapped_column(String(64))
    failures: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    blocked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_failure_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ApiToken(db.Model):
    """A bearer token for the JSON API; only a hash of the secret is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (CheckConstraint("scopes <> ''", name="scopes_not_empty"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[str] = mapped_column(String(64))  # comma-separated subset of TOKEN_SCOPES
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    user: Mapped[User] = relationship()


IDEMPOTENCY_STATES = ("in_flight", "done")


class IdempotencyKey(db.Model):
    """A client's Idempotency-Key for one API token: the request it named and, once done, the response."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        # One claim per (token, key): a second request with the key can never run the work again.
        UniqueConstraint("token_id", "key", name="uq_idempotency_keys_token_key"),
        CheckConstraint(in_list("state", IDEMPOTENCY_STATES), name="state"),
        CheckConstraint("(state = 'done') = (response_status IS NOT NULL)", name="response_iff_done"),
        Index("ix_idempotency_keys_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(12))
    claim: Mapped[str] = mapped_column(String(32))  # who holds an in-flight key; a takeover changes it
    response_status: Mapped[int | None] = mapped_column()
    response_body: Mapped[str | None] = mapped_column(Text)
    response_location: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

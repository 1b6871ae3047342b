"""Staff accounts: creation, roles, activation, passwords, sign-in checks and reset links."""
from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from werkzeug.security import check_password_hash, generate_password_hash

from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, User
from isp_admin.models.base import utcnow
from isp_admin.models.users import ROLES, SignInThrottle
from isp_admin.services.platform import audit, versions

MIN_PASSWORD_LENGTH = 12
ZXCVBN_MAX_LENGTH = 72  # zxcvbn refuses longer input
_DUMMY_HASHES: dict[str, str] = {}  # per PASSWORD_HASH_METHOD, made on first use
THROTTLE_MEMORY = timedelta(days=1)


def normalise_email(email: str) -> str:
    """Validate an email address and return it lower-cased; raise Invalid otherwise."""
    try:
        return validate_email((email or "").strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise Invalid("Enter a valid email address.", {"email": str(exc)}) from None


def check_password_strength(password: str, user_inputs: tuple[str, ...] = ()) -> None:
    """Reject passwords that are too short, too plain, or easy to guess by zxcvbn's estimate."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise Invalid(
            f"The password must be at least {MIN_PASSWORD_LENGTH} characters.",
            {"password": f"At least {MIN_PASSWORD_LENGTH} characters."},
        )
    if len(set(password)) < 5:
        raise Invalid("The password is too simple.", {"password": "Use more varied characters."})
    minimum = current_app.config.get("PASSWORD_MIN_SCORE", 3)
    # zxcvbn refuses more than 72 characters (its matching grows with the length); a prefix that long decides
    # any real password's score.
    # Imported here: its word lists hold ~12 MB, which every web worker would carry to serve the rare password form.
    from zxcvbn import zxcvbn

    result = zxcvbn(password[:ZXCVBN_MAX_LENGTH], user_inputs=[part for part in user_inputs if part])
    if result["score"] < minimum:
        feedback = result["feedback"]
        why = " ".join(filter(None, [feedback.get("warning"), *feedback.get("suggestions", [])]))
        message = (f"This password is too easy to guess (strength {result['score']} of 4, at least {minimum} "
                   f"needed). {why or 'Use a longer passphrase of uncommon words.'}")
        raise Invalid(message, {"password": message})


def _hash(password: str) -> str:
    return generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])


def get_user(user_id: int) -> User:
    """Return a user by id or raise NotFound."""
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
    return user


def session_user(user_id: int, session_version: int) -> User | None:
    """Return the signed-in user of a session, or None once the account is inactive or the session revoked."""
    if versions.enabled():  # the same round trip reads the data versions the lists key their caches on
        row = db.session.execute(select(User, versions.column()).where(User.id == user_id)).first()
        user = row[0] if row else None
        versions.remember(row[1] if row else None)
    else:
        user = db.session.get(User, user_id)
    # Signing out or changing the password bumps the user's session version, which ends every older session.
    if user is None or not user.active or user.session_version != session_version:
        return None
    return user


def find_by_email(email: str) -> User | None:
    """Return the user with this email (any case), if any."""
    return db.session.scalar(select(User).where(User.email == (email or "").strip().lower()))


def list_users(page: int, per_page: int):
    """Return one page of staff users, by name."""
    return db.paginate(select(User).order_by(User.name, User.id), page=page, per_page=per_page,
                       error_out=False)


def create_user(email: str, name: str, role: str, password: str | None = None) -> User:
    """Create a staff user; without a password the account can only be entered via a reset link."""
    email = normalise_email(email)
    if role not in ROLES:
        raise Invalid("Unknown role.", {"role": f"Choose one of {', '.join(ROLES)}."})
    if not (name or "").strip():
        raise Invalid("Enter a name.", {"name": "Required."})
    if password is not None:
        check_password_strength(password, (email, name))
    if find_by_email(email) is not None:
        raise Conflict("A user with this email already exists.", {"email": "Already in use."})
    user = User(email=email, name=name.strip(), role=role,
                password_hash=_hash(password if password is not None else secrets.token_urlsafe(32)))
    db.session.add(user)
    db.session.flush()
    audit.record("user.create", user, after=audit.snapshot(user))
    return user


def update_user(user_id: int, *, acting_user_id: int | None, role: str | None = None,
                name: str | None = None, active: bool | None = None) -> User:
    """Change a user's role, name or active flag; admins cannot demote or deactivate themselves."""
    user = get_user(user_id)
    before = audit.snapshot(user)
    if role is not None:
        if role not in ROLES:
            raise Invalid("Unknown role.", {"role": f"Choose one of {', '.join(ROLES)}."})
        if user.id == acting_user_id and role != user.role:
            raise BusinessRuleViolation("You cannot change your own role.")
        user.role = role
    if name is not None:
        if not name.strip():
            raise Invalid("Enter a name.", {"name": "Required."})
        user.name = name.strip()
    if active is not None and active != user.active:
        if user.id == acting_user_id:
            raise BusinessRuleViolation("You cannot deactivate your own account.")
        user.active = active
        user.session_version += 1  # a deactivated user's sessions end now
    if user.role != "admin" or not user.active:
        _ensure_an_admin_remains(user.id)
    db.session.flush()
    old, new = audit.changes(before, audit.snapshot(user))
    if new:
        audit.record("user.update", user, before=old, after=new)
    return user


def _ensure_an_admin_remains(excluding_id: int) -> None:
    remaining = db.session.scalar(
        select(func.count()).select_from(User).where(User.role == "admin", User.active, User.id != excluding_id)
    )
    if not remaining:
        raise BusinessRuleViolation("At least one active admin must remain.")


@dataclass(frozen=True)
class Throttled:
    """A sign-in refused unchecked: this address failed too often for this email and must wait `retry_after` s."""

    retry_after: int


STAFF_STATUSES = ("active", "locked", "invited", "deactivated")


@dataclass(frozen=True)
class SignInState:
    """What the user list shows of an account: its status, and of its failed sign-ins the addresses held now,
    the failures and the lock."""

    throttled_addresses: int
    failures: int
    blocked_until: datetime | None
    locked_until: datetime | None
    status: str = "active"  # one of STAFF_STATUSES

    @property
    def held(self) -> bool:
        """Whether anything keeps someone out right now (a throttled address or the account lock)."""
        return bool(self.throttled_addresses or self.locked_until)

    @property
    def held_until(self) -> datetime | None:
        """When the last thing keeping someone out ends (the later of the address wait and the account lock)."""
        return max(filter(None, (self.blocked_until, self.locked_until)), default=None)


def _status(user: User, held: bool) -> str:
    # Deactivation outranks a lock (unlocking would not let them in), and a lock outranks "invited": failed
    # sign-ins against an invited account are what the admin must see first.
    if not user.active:
        return "deactivated"
    if held:
        return "locked"
    return "invited" if user.last_login_at is None else "active"


def _dummy_hash() -> str:
    # The unknown-account path checks the password against this hash, made with the configured method and cost, so
    # it costs what checking a real account's hash costs: a faster dummy would time out who has an account.
    method = current_app.config["PASSWORD_HASH_METHOD"]
    if method not in _DUMMY_HASHES:
        _DUMMY_HASHES[method] = generate_password_hash(secrets.token_urlsafe(16), method=method)
    return _DUMMY_HASHES[method]


def password_matches(stored_hash: str | None, password: str | None) -> bool:
    """Check a password against an account's hash; with no hash (no such account) spend the same time, say no."""
    if stored_hash is None:
        check_password_hash(_dummy_hash(), password or "")
        return False
    return check_password_hash(stored_hash, password or "")


def _throttle_of(email: str, address: str) -> SignInThrottle | None:
    return db.session.scalar(select(SignInThrottle).where(SignInThrottle.email == email,
                                                          SignInThrottle.client_address == address))


def throttle_wait(failures: int) -> timedelta:
    """Return how long an address waits after its `failures`-th failure for one email (zero below the limit)."""
    over = failures - current_app.config["MAX_FAILED_LOGINS"]
    if over < 0:
        return timedelta(0)
    longest = current_app.config["LOCKOUT_MINUTES"] * 60
    return timedelta(seconds=min(2 ** min(over, 30), longest))  # 1 s, 2 s, 4 s … up to LOCKOUT_MINUTES


def _record_failure(email: str, address: str, now: datetime, user: User | None) -> None:
    table = SignInThrottle.__table__
    insert = postgresql_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # One statement, so two concurrent failures from one address both count (no lost update, no duplicate row).
    stmt = insert(table).values(email=email, client_address=address, failures=1, last_failure_at=now)
    stmt = stmt.on_conflict_do_update(index_elements=[table.c.email, table.c.client_address],
                                      set_={"failures": table.c.failures + 1, "last_failure_at": now})
    row = db.session.execute(stmt.returning(table.c.id, table.c.failures)).one()
    wait = throttle_wait(row.failures)
    if wait:
        db.session.execute(update(table).where(table.c.id == row.id).values(blocked_until=now + wait))
        if user is not None and row.failures == current_app.config["MAX_FAILED_LOGINS"]:
            audit.record("user.sign_in_throttled", user, after={"client_address": address})
    # Forget addresses that have been quiet for a day (their wait long over), so the table stays small.
    db.session.execute(delete(table).where(table.c.last_failure_at < now - THROTTLE_MEMORY,
                                           or_(table.c.blocked_until.is_(None), table.c.blocked_until < now)))


def authenticate(email: str, password: str, client_address: str | None = None) -> User | Throttled | None:
    """Check a sign-in: the user, None when refused (the failure counted), or Throttled for this address.

    Failures are counted per (typed email, client address), never against the account as a whole: an attacker
    elsewhere can slow only their own guesses, and the owner signs in from their own address. Known and unknown
    emails take the same steps (the same queries, a hash check of the same cost, the same writes).
    """
    now = utcnow()
    typed = (email or "").strip().lower()[:254]
    address = (client_address or "unknown")[:64]
    throttle = _throttle_of(typed, address)
    if throttle is not None and throttle.blocked_until is not None and throttle.blocked_until > now:
        return Throttled(max(1, math.ceil((throttle.blocked_until - now).total_seconds())))
    user = find_by_email(typed)
    ok = password_matches(user.password_hash if user is not None else None, password)
    if user is None or not ok or not user.active or user.is_locked(now):
        _record_failure(typed, address, now, user)
        db.session.flush()
        return None
    if throttle is not None:
        db.session.delete(throttle)  # this address proved it knows the password; other addresses stay held
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    db.session.flush()
    return user


def sign_in(email: str, password: str, client_address: str | None = None) -> User | Throttled | None:
    """Check a sign-in as authenticate does and audit a success as the user who signed in, from their address."""
    result = authenticate(email, password, client_address)
    if isinstance(result, User):
        with audit.acting_as(audit.Actor("user", result.id, result.email, client_address)):
            audit.record("user.login", result)
    return result


def sign_in_states(users) -> dict[int, SignInState]:
    """Return each user's sign-in state (throttled addresses, failures, lock), for the user list."""
    now = utcnow()
    by_email = {user.email: user for user in users}
    rows = db.session.scalars(select(SignInThrottle).where(SignInThrottle.email.in_(list(by_email)))).all() \
        if by_email else []
    states = {}
    for user in users:
        mine = [row for row in rows if row.email == user.email]
        held = [row.blocked_until for row in mine if row.blocked_until is not None and row.blocked_until > now]
        locked_until = user.locked_until if user.is_locked(now) else None
        states[user.id] = SignInState(len(held), sum(row.failures for row in mine), max(held, default=None),
                                      locked_until, _status(user, bool(held or locked_until)))
    return states


def unlock_user(user_id: int) -> User:
    """Clear an account's lock and every address's failed sign-ins, so anyone with the password gets in now."""
    user = get_user(user_id)
    rows = db.session.scalars(select(SignInThrottle).where(SignInThrottle.email == user.email)).all()
    before = {"locked_until": user.locked_until.isoformat() if user.locked_until else None,
              "throttled_addresses": sorted(row.client_address for row in rows),
              "failures": sum(row.failures for row in rows)}
    for row in rows:
        db.session.delete(row)
    user.locked_until = None
    user.failed_logins = 0
    db.session.flush()
    audit.record("user.unlock", user, before=before, after={"locked_until": None, "throttled_addresses": []})
    return user


def change_password(user_id: int, current_password: str, new_password: str) -> User:
    """Change a user's own password after checking the current one; ends every other session."""
    user = get_user(user_id)
    if not check_password_hash(user.password_hash, current_password or ""):
        raise Invalid("The current password is wrong.", {"current_password": "Wrong password."})
    return _set_password(user, new_password, "user.password_change")


def _set_password(user: User, new_password: str, action: str) -> User:
    check_password_strength(new_password, (user.email, user.name))
    user.password_hash = _hash(new_password)
    user.session_version += 1
    user.failed_logins = 0
    user.locked_until = None
    db.session.flush()
    audit.record(action, user, after={"session_version": user.session_version})
    return user


def _reset_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="password-reset")


def _fingerprint(user: User) -> str:
    # Changes whenever the password (or session version) changes, so a used link stops working.
    return hashlib.sha256(f"{user.password_hash}:{user.session_version}".encode()).hexdigest()[:20]


def make_reset_token(user: User) -> str:
    """Return a signed, expiring, single-use password-reset token for `user`."""
    return _reset_serializer().dumps({"uid": user.id, "fp": _fingerprint(user)})


def user_for_reset_token(token: str) -> User:
    """Return the user a reset token is valid for, or raise Invalid."""
    try:
        data = _reset_serializer().loads(token, max_age=current_app.config["PASSWORD_RESET_MAX_AGE"])
    except SignatureExpired:
        raise Invalid("This reset link has expired. Ask for a new one.") from None
    except BadSignature:
        raise Invalid("This reset link is not valid. Ask for a new one.") from None
    user = db.session.get(User, data.get("uid")) if isinstance(data, dict) else None
    if user is None or not user.active or data.get("fp") != _fingerprint(user):
        raise Invalid("This reset link has already been used or is no longer valid.")
    return user


RESET_SENT = "user.reset_link_sent"


def claim_reset_email(email: str) -> User | None:
    """Return the active user to send a reset link to, or None (unknown, inactive, or over the hourly quota).

    The quota (PASSWORD_RESET_EMAILS_PER_HOUR per account, whoever asks and from wherever) keeps the reset form
    from being used to flood a colleague's inbox; the caller answers the same either way. Each claim is audited,
    and the audit trail is the count: it holds across workers and without Redis.
    """
    user = find_by_email(email)
    if user is None or not user.active:
        return None
    since = utcnow() - timedelta(hours=1)
    sent = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.entity_type == User.__tablename__, AuditEvent.entity_id == user.id,
        AuditEvent.action == RESET_SENT, AuditEvent.at > since))
    if sent >= current_app.config["PASSWORD_RESET_EMAILS_PER_HOUR"]:
        return None
    audit.record(RESET_SENT, user)
    return user


INVITATION_RESENT = "user.invitation_resent"


def claim_invitation_resend(user_id: int) -> User:
    """Return an invited user (active, never signed in) whose invitation may be mailed again, and audit the resend.

    Resends and reset emails share one hourly quota per account (PASSWORD_RESET_EMAILS_PER_HOUR): both mail a
    password link to the same inbox, and an admin's repeated clicks must not flood it. The audit trail is the count.
    """
    user = get_user(user_id)
    if not user.active:
        raise BusinessRuleViolation(f"{user.email} is deactivated: reactivate the account before inviting again.")
    if user.last_login_at is not None:
        raise BusinessRuleViolation(f"{user.email} has already signed in; they can use \"Forgot your password?\" "
                                    "on the sign-in page.")
    since = utcnow() - timedelta(hours=1)
    sent = db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.entity_type == User.__tablename__, AuditEvent.entity_id == user.id,
        AuditEvent.action.in_((RESET_SENT, INVITATION_RESENT)), AuditEvent.at > since))
    limit = current_app.config["PASSWORD_RESET_EMAILS_PER_HOUR"]
    if sent >= limit:
        raise BusinessRuleViolation(f"{user.email} was already sent {sent} password link{'s' if sent != 1 else ''} "
                                    "in the last hour; try again later.")
    audit.record(INVITATION_RESENT, user)
    return user


def reset_password(token: str, new_password: str) -> User:
    """Set a new password through a reset link; the link cannot be used again."""
    user = user_for_reset_token(token)
    return _set_password(user, new_password, "user.password_reset")

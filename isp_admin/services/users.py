"""Staff accounts: creation, roles, activation, passwords, sign-in checks and reset links."""
from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import User
from isp_admin.models.base import utcnow
from isp_admin.models.users import ROLES
from isp_admin.services import audit

MIN_PASSWORD_LENGTH = 12
# A constant hash to check against when the email is unknown, so both paths cost the same.
_DUMMY_HASH = generate_password_hash("not-a-real-password", method="pbkdf2:sha256:600000")


def normalise_email(email: str) -> str:
    """Validate an email address and return it lower-cased; raise Invalid otherwise."""
    try:
        return validate_email((email or "").strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise Invalid("Enter a valid email address.", {"email": str(exc)}) from None


def check_password_strength(password: str) -> None:
    """Reject passwords that are too short or too plain."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise Invalid(
            f"The password must be at least {MIN_PASSWORD_LENGTH} characters.",
            {"password": f"At least {MIN_PASSWORD_LENGTH} characters."},
        )
    if len(set(password)) < 5:
        raise Invalid("The password is too simple.", {"password": "Use more varied characters."})


def _hash(password: str) -> str:
    return generate_password_hash(password, method=current_app.config["PASSWORD_HASH_METHOD"])


def get_user(user_id: int) -> User:
    """Return a user by id or raise NotFound."""
    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound("No such user.")
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
        check_password_strength(password)
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


def authenticate(email: str, password: str) -> User | None:
    """Check a sign-in attempt, counting failures and locking the account after too many."""
    now = utcnow()
    user = find_by_email(email)
    if user is None:
        check_password_hash(_DUMMY_HASH, password or "")
        return None
    ok = check_password_hash(user.password_hash, password or "")
    if user.is_locked(now) or not user.active:
        return None
    if not ok:
        user.failed_logins += 1
        if user.failed_logins >= current_app.config["MAX_FAILED_LOGINS"]:
            user.locked_until = now + timedelta(minutes=current_app.config["LOCKOUT_MINUTES"])
            user.failed_logins = 0
            audit.record("user.locked", user, after={"locked_until": user.locked_until.isoformat()})
        db.session.flush()
        return None
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    db.session.flush()
    return user


def change_password(user_id: int, current_password: str, new_password: str) -> User:
    """Change a user's own password after checking the current one; ends every other session."""
    user = get_user(user_id)
    if not check_password_hash(user.password_hash, current_password or ""):
        raise Invalid("The current password is wrong.", {"current_password": "Wrong password."})
    return _set_password(user, new_password, "user.password_change")


def _set_password(user: User, new_password: str, action: str) -> User:
    check_password_strength(new_password)
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


def reset_password(token: str, new_password: str) -> User:
    """Set a new password through a reset link; the link cannot be used again."""
    user = user_for_reset_token(token)
    return _set_password(user, new_password, "user.password_reset")

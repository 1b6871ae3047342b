"""Rate-limit keys and limits: per API token or signed-in user, else per client address."""
import hashlib

from flask import current_app, request
from flask_login import current_user


def _api_token_key() -> str | None:
    # Keyed by a hash of the bearer secret, without a database read: an unknown token still gets its own
    # bucket, and the auth check that follows refuses it.
    if not request.path.startswith("/api/"):
        return None
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return None
    return f"token:{hashlib.sha256(secret.strip().encode()).hexdigest()[:32]}"


def rate_limit_key() -> str:
    """Return the bucket for this request: the API token, else the staff user when signed in, else the IP."""
    token_key = _api_token_key()
    if token_key:
        return token_key
    if current_user and current_user.is_authenticated:
        return f"user:{current_user.id}"
    return f"ip:{request.remote_addr or 'unknown'}"


def default_limit() -> str:
    """Return the default limit string for this request (authenticated or anonymous)."""
    if _api_token_key() or (current_user and current_user.is_authenticated):
        return current_app.config["RATE_LIMIT_AUTHENTICATED"]
    return current_app.config["RATE_LIMIT_ANONYMOUS"]


def login_limit() -> str:
    """Return the limit on login attempts per client address."""
    return current_app.config["RATE_LIMIT_LOGIN"]


def password_reset_limit() -> str:
    """Return the limit on password-reset requests per client address."""
    return current_app.config["RATE_LIMIT_PASSWORD_RESET"]


def client_ip_key() -> str:
    """Return the client address; login and reset limits hold per address, signed in or not."""
    return f"ip:{request.remote_addr or 'unknown'}"


def exempt_from_default_limit() -> bool:
    """Keep static assets and health probes out of the per-client budget."""
    endpoint = request.endpoint or ""
    return endpoint == "static" or endpoint.startswith(("health.", "bootstrap."))

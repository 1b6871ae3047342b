"""Bearer-token authentication for the API: the one decorator that guards every API view."""
from __future__ import annotations

from functools import wraps

from flask import g, request

from isp_admin.errors import error_response
from isp_admin.extensions import db
from isp_admin.permissions import PERMISSIONS
from isp_admin.ratelimit import rejected_token_allowed
from isp_admin.services.identity import tokens as token_service
from isp_admin.services.platform.audit import Actor, set_actor_provider
from isp_admin.services.platform.clock import utcnow
from isp_admin.unit_of_work import commit_step

REALM = 'Bearer realm="isp-admin"'
URL_TOKEN_PARAMS = ("access_token", "token")


def bearer_secret() -> str | None:
    """Return the secret of an `Authorization: Bearer …` header, if the request has one."""
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return secret.strip() or None if scheme.lower() == "bearer" else None


def resolve_bearer_token(secret: str) -> token_service.AuthenticatedToken:
    """Return the live token for `secret` or raise TokenRejected, looked up at most once per request."""
    # The rate limiter keys on the token's owner before the view's auth runs; both share this one lookup.
    cached = g.get("bearer_token_lookup")
    if cached is None or cached[0] != secret:
        try:
            cached = (secret, token_service.authenticate(secret, utcnow()))
        except token_service.TokenRejected as exc:
            cached = (secret, exc)
        g.bearer_token_lookup = cached
    if isinstance(cached[1], token_service.TokenRejected):
        raise cached[1]
    return cached[1]


def token_owner(secret: str) -> int | None:
    """Return the id of the user owning the live token `secret`, or None when the token is rejected."""
    try:
        return resolve_bearer_token(secret).user_id
    except token_service.TokenRejected:
        return None


def _unauthenticated(message: str, error: str | None = None):
    challenge = f'{REALM}, error="{error}"' if error else REALM
    return error_response(401, "AUTHENTICATION_REQUIRED", message, headers={"WWW-Authenticate": challenge})


def _denied(message: str):
    return error_response(403, "PERMISSION_DENIED", message)


def _check_request(scope: str, permission: str):
    """Authenticate the request's token; return an error response, or None with g.api_token set."""
    in_url = [name for name in URL_TOKEN_PARAMS if name in request.args]
    if in_url:
        # A token in a URL ends up in logs, proxies and browser history; refuse it even when it is valid.
        return error_response(400, "VALIDATION_ERROR",
                              "Send the API token in the Authorization header (Bearer), never in the URL.",
                              {name: "Not accepted in the query string." for name in in_url})
    secret = bearer_secret()
    if secret is None:
        return _unauthenticated("Authentication required: send 'Authorization: Bearer <token>'.")
    try:
        token = resolve_bearer_token(secret)
    except token_service.TokenRejected as exc:
        db.session.rollback()
        if not rejected_token_allowed():
            return error_response(429, "RATE_LIMITED", "Too many requests with invalid tokens from this address.",
                                  headers={"Retry-After": "60"})
        return _unauthenticated(exc.message, error="invalid_token")
    role, scopes = token.user.role, token.scopes.split(",")
    g.api_identity = {"token_id": token.id, "user_id": token.user_id}  # plain values: the commit expires `token`
    actor = Actor("token", token.id, f"{token.user.email} (token {token.prefix})", request.remote_addr)
    if db.session.info.pop("token_last_used_written", False):
        commit_step()  # last_used_at (written at most once a minute) survives a failing view
    if scope not in scopes:
        return _denied(f"This token lacks the {scope} scope.")
    if role not in PERMISSIONS[permission] or not token_service.role_allows_scope(role, scope):
        return _denied(f"The token owner's role ({role}) does not allow this.")
    set_actor_provider(lambda: actor)
    g.api_token = token
    return None


def token_allows(scope: str, permission: str) -> bool:
    """Whether the request's (already checked) token also has `scope`, and its owner's role `permission`."""
    token = g.get("api_token")
    return bool(token and scope in token.scopes.split(",") and token.user.role in PERMISSIONS[permission])


def check_token(scope: str, permission: str):
    """Authenticate the request's bearer token for `scope`/`permission`: None when allowed, else the refusal."""
    return _check_request(scope, permission)


def api_access(scope: str, permission: str):
    """Guard an API view: a live bearer token with `scope`, whose owner's role holds `permission`."""
    if permission not in PERMISSIONS or scope not in token_service.SCOPE_PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r} or scope {scope!r}")

    def decorate(view):
        @wraps(view)
        def guarded(*args, **kwargs):
            refused = _check_request(scope, permission)
            return refused if refused is not None else view(*args, **kwargs)

        guarded.access_permission = permission
        guarded.api_scope = scope
        return guarded

    return decorate

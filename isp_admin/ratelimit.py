"""Rate-limit keys and limits: per API user (all their tokens) or signed-in user, else per client address."""
import hashlib
import logging
from collections.abc import Callable
from functools import lru_cache, partial

from flask import current_app, request
from flask_login import current_user
from sqlalchemy.exc import SQLAlchemyError

OWNER_LOOKUP = "isp_admin.api_owner_lookup"  # the app.extensions key of the API's token-owner lookup


def _api_bearer_secret() -> str | None:
    if not request.path.startswith("/api/"):
        return None
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return secret.strip() or None if scheme.lower() == "bearer" else None


def register_token_owner_lookup(app, lookup: Callable[[str], int | None]) -> None:
    """Key API requests on their token's owner, as `lookup(secret)` finds it (None for a rejected token)."""
    # The API hands its lookup over rather than this module importing it: isp_admin.extensions imports this
    # module and every model and service imports extensions, so an import here would tie them all to the API.
    app.extensions[OWNER_LOOKUP] = lookup


def _token_owner(secret: str) -> int | None:
    # The limiter runs before the view, so this is where the token is first looked up; auth reuses the lookup
    # (kept in flask.g), so keying on its owner costs no extra query.
    lookup = current_app.extensions.get(OWNER_LOOKUP)
    if lookup is None:  # an app without the API has no token owners
        return None
    try:
        return lookup(secret)
    except SQLAlchemyError:
        # Flask-Limiter takes any error from a key function for a dead storage and drops to in-memory counting;
        # the database's trouble is answered by auth instead (it looks the token up again and fails as a 503).
        log.warning("token lookup for the rate-limit key failed; keying on the token", exc_info=True)
        _rollback()
        return None


def _rollback() -> None:
    from isp_admin.extensions import db

    try:
        db.session.rollback()
    except SQLAlchemyError:
        log.debug("rollback after a failed token lookup failed too", exc_info=True)


def _api_token_key() -> str | None:
    secret = _api_bearer_secret()
    if secret is None:
        return None
    owner = _token_owner(secret)
    if owner is not None:
        # One budget per user, however many tokens they hold: another token must not buy another budget.
        return f"api-user:{owner}"
    # A rejected token still gets a bucket of its own (the auth check that follows refuses it, and counts it
    # against its address's anonymous budget).
    return f"token:{hashlib.sha256(secret.encode()).hexdigest()[:32]}"


def rate_limit_key() -> str:
    """Return the bucket for this request: the API token's owner, else the staff user when signed in, else the IP."""
    token_key = _api_token_key()
    if token_key:
        return token_key
    if current_user and current_user.is_authenticated:
        return f"user:{current_user.id}"
    return f"ip:{request.remote_addr or 'unknown'}"


def default_limit() -> str:
    """Return the default limit string for this request (authenticated or anonymous)."""
    if _api_bearer_secret() or (current_user and current_user.is_authenticated):
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


@lru_cache(maxsize=1024)
def exempt_endpoint(endpoint: str) -> bool:
    """Say whether an endpoint is kept out of rate limiting altogether: static assets, health probes, metrics."""
    return endpoint == "static" or endpoint.startswith(("health.", "bootstrap.", "metrics."))


log = logging.getLogger(__name__)
RETRY_AFTER_STATUSES = (409, 429, 503)


def register_retry_after_cleanup(app) -> None:
    """Keep Retry-After for answers that ask the client to wait (429, 503, an in-flight 409).

    Flask-Limiter sets it on every response it counts, where a 200 carrying "Retry-After: 60" only misleads
    clients. Registered before the limiter, so this hook runs after the limiter has added its headers.
    """

    @app.after_request
    def drop_needless_retry_after(response):
        if response.status_code not in RETRY_AFTER_STATUSES:
            response.headers.pop("Retry-After", None)
        return response


def start_afresh(limiter, app) -> None:
    """Fit the process's one limiter to this app after init_app: its storage, key prefix and fast paths.

    Flask-Limiter keeps "the storage died, use memory" on the Limiter object and init_app does not clear it; one
    object serves every app built in a process (tests, a CLI that builds two), so an app would inherit the last
    one's lost Redis and count in memory, where other workers cannot see it. Its key prefix is kept the same way
    (`self._key_prefix or config`), so a second app would count under the first one's prefix: in the same Redis
    as another deployment's counters. Then the fast paths of isp_admin.ratelimit_fast. Call right after
    limiter.init_app.
    """
    limiter._storage_dead = False  # noqa: SLF001  (no public reset; pinned release, tested in test_rate_limits)
    limiter._key_prefix = app.config.get("RATELIMIT_KEY_PREFIX", "")  # noqa: SLF001  (same: tested there)
    from isp_admin.ratelimit_fast import install_fast_paths

    install_fast_paths(app, limiter)


def guard_limiter_response_hook(app, limiter) -> None:
    """Make the limiter's after_request hook (headers, conditional deductions) unable to fail a response.

    It runs after the view, so after its commit: raising there (its storage died mid-request) would answer 500
    for a write that happened. RATELIMIT_SWALLOW_ERRORS covers it too; this holds whatever that says.
    Call right after limiter.init_app.
    """
    if limiter not in app.extensions.get("limiter", ()):  # RATELIMIT_ENABLED false: the limiter hooked nothing
        return
    hooks = app.after_request_funcs.get(None, [])
    found = [i for i, hook in enumerate(hooks) if isinstance(hook, partial) and hook.args and hook.args[0] is limiter]
    if not found:  # a Flask-Limiter release that registers its hook differently must not pass unnoticed
        raise RuntimeError("Flask-Limiter's after_request hook was not found; cannot guard it")
    for index in found:
        hooks[index] = _never_fails(hooks[index])


def _never_fails(hook):
    def limiter_headers(response):
        if exempt_endpoint(request.endpoint or ""):  # nothing was counted: no headers to add
            return response
        try:
            return hook(response)
        except Exception:  # noqa: BLE001  (the response is the truth about the write; the headers are a courtesy)
            log.exception("rate-limit response hook failed; answering without its headers")
            return response

    return limiter_headers


def rejected_token_allowed() -> bool:
    """Count a rejected API token against its address's anonymous budget; False once that budget is spent.

    Every unknown token would otherwise get a fresh bucket of its own, so random tokens would dodge the per-address
    limit on unauthenticated requests.
    """
    from limits import parse

    from isp_admin.extensions import limiter

    if not current_app.config.get("RATELIMIT_ENABLED", True):
        return True
    try:
        return limiter.limiter.hit(parse(current_app.config["RATE_LIMIT_ANONYMOUS"]), "api-rejected-token",
                                   client_ip_key())
    except Exception:  # noqa: BLE001  (storage trouble must not turn a 401 into a 500; the limiter logs it)
        return True

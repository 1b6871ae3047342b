"""The rate limiter's fast paths: one Redis round trip per counted request, and no work where nothing is counted.

Flask-Limiter resolves every limit, exemption and blueprint rule again on each request, and limits' fixed window
reads the count and the reset for the X-RateLimit-* headers in two more round trips after its hit. Here:
- exempt endpoints (static, health, metrics) skip Flask-Limiter's hooks altogether, decided once per endpoint;
- an endpoint whose only limit is the one budget per client (every page and API view but sign-in and reset) is
  counted directly: the key, one hit, the headers' window from that hit, 429 when spent;
- everything else (decorated limits, the in-memory fallback while Redis is away) goes through Flask-Limiter.
"""
from __future__ import annotations

import time
from functools import lru_cache, wraps

from flask import has_request_context, request
from flask.globals import request_ctx
from flask_limiter import RateLimitExceeded, RequestLimit
from limits import WindowStats
from limits.storage import RedisStorage
from limits.strategies import FixedWindowRateLimiter

from isp_admin.ratelimit import exempt_endpoint

DEFAULT_ONLY = "isp_admin.ratelimit_default_only"  # app.extensions: endpoint -> counted by the fast path


def install_fast_paths(app, limiter) -> None:
    """Count in one round trip and skip exempt endpoints; call after limiter.init_app (start_afresh does)."""
    if limiter not in app.extensions.get("limiter", ()):  # RATELIMIT_ENABLED false: the limiter hooked nothing
        return
    if type(limiter._limiter) is FixedWindowRateLimiter:  # noqa: SLF001  (the configured strategy, as built)
        # Flask-Limiter takes a strategy by name only; this one hits and reads the window in one round trip.
        limiter._limiter = OneTripFixedWindow(limiter._storage)  # noqa: SLF001  (tested in test_rate_limits)
    app.extensions[DEFAULT_ONLY] = {}
    wrapped = 0
    for hooks, wrap in ((app.before_request_funcs.get(None, []), _checked_fast),
                        (app.teardown_request_funcs.get(None, []), _unless_exempt)):
        for index, hook in enumerate(hooks):
            if getattr(hook, "__self__", None) is limiter:
                hooks[index] = wrap(hook, app, limiter)
                wrapped += 1
    if wrapped != 2:  # a Flask-Limiter release that registers its hooks differently must not pass unnoticed
        raise RuntimeError(f"Flask-Limiter's request hooks were not found ({wrapped} of 2); cannot skip exempt routes")


def _unless_exempt(hook, _app, _limiter):
    @wraps(hook)
    def on_counted_endpoints(*args):
        if exempt_endpoint(request.endpoint or ""):
            return None
        return hook(*args)

    return on_counted_endpoints


def _checked_fast(check_request_limit, app, limiter):
    @wraps(check_request_limit)
    def check_limits():
        endpoint = request.endpoint or ""
        if exempt_endpoint(endpoint):
            return None
        if limiter._storage_dead or not _default_only(app, limiter, endpoint):  # noqa: SLF001
            return check_request_limit()
        try:
            return _count_default_budget(limiter)
        except RateLimitExceeded:
            raise
        except Exception:
            return _storage_failed(limiter, check_request_limit)

    return check_limits


def _default_only(app, limiter, endpoint: str) -> bool:
    # Whether the one default budget is all this endpoint is limited by: decided once per endpoint, with what may
    # change later (the limiter switched off by another app of the process, hints of limits met in a view) each time.
    if not (limiter.enabled and limiter.initialized) or limiter.limit_manager.has_hints(endpoint):
        return False
    known = app.extensions[DEFAULT_ONLY]
    if endpoint not in known:
        # Flask-Limiter's own resolution, once: decorated and blueprint limits, exemptions, then the defaults.
        manager = limiter.limit_manager
        defaults, decorated = manager.resolve_limits(app, endpoint, request.blueprint)
        groups = manager._default_limits  # noqa: SLF001  (no public accessor; tested in test_rate_limits)
        known[endpoint] = bool(
            endpoint in app.view_functions and not decorated and len(defaults) == 1 and len(groups) == 1
            and _plain(groups[0]) and not (manager.application_limits or limiter._meta_limits  # noqa: SLF001
                                           or limiter._on_breach or limiter._request_filters))  # noqa: SLF001
    return known[endpoint]


def _plain(group) -> bool:
    return not (group.exempt_when or group.deduct_when or group.methods or group.per_method or group.meta_limits
                or group.on_breach or callable(group.cost) or (group.cost or 1) != 1) and group.shared


@lru_cache(maxsize=64)
def _runtime_limit(group, limit_string: str):
    # Parsed once per limit string (Flask-Limiter parses it on every request).
    return next(iter(group))


def _count_default_budget(limiter) -> None:
    [group] = limiter.limit_manager._default_limits  # noqa: SLF001
    runtime = _runtime_limit(group, group.limit_provider())
    key = runtime.key_func()
    args = [key, runtime.scope]  # a shared limit's scope is its own name: one budget across every route
    if limiter._key_prefix:  # noqa: SLF001
        args = [limiter._key_prefix, *args]  # noqa: SLF001
    allowed = limiter.limiter.hit(runtime.limit, *args)
    context = limiter.context
    context.view_rate_limit = RequestLimit(limiter, runtime.limit, args, not allowed, runtime.shared)
    context.view_rate_limits = [context.view_rate_limit]
    if not allowed:
        limiter.logger.info("ratelimit %s (%s) exceeded at endpoint: %s", runtime.limit, key, runtime.scope)
        raise RateLimitExceeded(runtime)


def _storage_failed(limiter, check_request_limit):
    # As Flask-Limiter answers its own storage failing: count in memory from now on (it retries Redis with a
    # back-off), else log and let the request through, else raise.
    if limiter._in_memory_fallback_enabled:  # noqa: SLF001
        limiter.logger.warning("Rate limit storage unreachable - falling back to in-memory storage")
        limiter._storage_dead = True  # noqa: SLF001
        return check_request_limit()
    if limiter._swallow_errors:  # noqa: SLF001
        limiter.logger.exception("Failed to rate limit. Swallowing error")
        return None
    raise


# INCRBY and the window's TTL in one call; a key found without a TTL (first hit, or left by a crash) gets one.
WINDOW_SCRIPT = """
local count = redis.call("incrby", KEYS[1], ARGV[2])
local ttl = redis.call("ttl", KEYS[1])
if ttl < 0 then
    redis.call("expire", KEYS[1], ARGV[1])
    ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class OneTripFixedWindow(FixedWindowRateLimiter):
    """The fixed-window strategy in one Redis round trip per hit: the hit returns the window the headers show.

    limits' own hit is one script call, and the X-RateLimit-* headers then read the count (GET) and the reset
    (TTL): three round trips a request. Here the hit's script returns both, kept for this request only, so the
    headers cost nothing more. Counts stay in Redis (shared by every worker, exact under concurrency); the
    remaining count shown is the one right after this request's own hit. Any other storage (the in-memory
    fallback) counts as limits does.
    """

    def __init__(self, storage):
        super().__init__(storage)
        self._script = (storage.get_connection().register_script(WINDOW_SCRIPT)
                        if isinstance(storage, RedisStorage) else None)

    def hit(self, item, *identifiers: str, cost: int = 1) -> bool:
        """Count `cost` against the window; True while it is within the limit."""
        if self._script is None:
            return super().hit(item, *identifiers, cost=cost)
        key = item.key_for(*identifiers)
        count, ttl = self._script([self.storage.prefixed_key(key)], [item.get_expiry(), cost])
        _windows_hit()[key] = WindowStats(time.time() + int(ttl), max(0, item.amount - int(count)))
        return int(count) <= item.amount

    def get_window_stats(self, item, *identifiers: str) -> WindowStats:
        """Return the window this request's hit saw, else read it from the storage."""
        seen = _windows_hit().pop(item.key_for(*identifiers), None)
        return seen if seen is not None else super().get_window_stats(item, *identifiers)


def _windows_hit() -> dict:
    # On the request context, not flask.g: a test may keep one app context (and so one g) across requests.
    if not has_request_context():
        return {}
    context = request_ctx._get_current_object()  # noqa: SLF001  (werkzeug's LocalProxy: the object itself)
    windows = getattr(context, "isp_rate_limit_windows", None)
    if windows is None:
        windows = context.isp_rate_limit_windows = {}
    return windows

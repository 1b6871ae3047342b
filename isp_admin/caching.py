"""The app's cache, failing open: while Redis cannot be reached a read is a miss and a write is skipped.

Every cached value here can be recomputed from the database, so losing Redis should cost speed, never a page:
without this, the dashboard and the customer list answered 500 for as long as Redis was down. An outage is logged
when it starts (then once a minute) and when it ends; at its end this app's keys are dropped, since the writes made
meanwhile could not invalidate them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from flask_caching import Cache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
WARN_EVERY_SECONDS = 60.0  # one warning a minute per process is enough to page someone; one per request floods
# While Redis is down one operation in this long tries it and the rest are misses at once: a Redis that hangs would
# otherwise cost every operation its socket timeout (REDIS_SOCKET_TIMEOUT).
RETRY_SECONDS = 2.0


@dataclass
class Outage:
    """Whether one app's cache backend is down, since when, and when it was last tried and last reported."""

    since: float | None = None
    last_try: float = 0.0
    last_warning: float = 0.0


class FailOpenCache(Cache):
    """Flask-Caching's Cache whose operations fall back to "not cached" while its Redis is unreachable."""

    def _outage(self) -> Outage:
        # Kept on the app's backend, so each app (one per process in production; many in tests) has its own.
        backend = self.cache
        outage = getattr(backend, "_isp_admin_outage", None)
        if outage is None:
            outage = backend._isp_admin_outage = Outage()
        return outage

    def _attempt(self, operation: str, fallback, *args, **kwargs):
        outage = self._outage()
        if outage.since is not None:
            now = time.monotonic()
            if now - outage.last_try < RETRY_SECONDS:
                return fallback
            outage.last_try = now
        try:
            result = getattr(super(), operation)(*args, **kwargs)
        except RedisError as exc:
            _note_failure(outage, operation, exc)
            return fallback
        if outage.since is not None:
            self._recover(outage)
            return fallback  # what was read may be one of the stale values just dropped
        return result

    def _recover(self, outage: Outage) -> None:
        # A Redis that was cut off rather than restarted still holds what the outage's writes failed to
        # invalidate (a customer count, a report); drop this app's keys so nothing stale is served after.
        down_for = time.monotonic() - outage.since
        try:
            super().clear()
        except RedisError as exc:
            outage.last_try = time.monotonic()
            log.warning("cache reachable again but could not be cleared; still treated as down: %s", exc)
            return
        outage.since = None
        log.warning("cache reachable again after %.1f s; its keys were cleared, as writes during the outage "
                    "could not invalidate them", down_for)

    def get(self, *args, **kwargs):
        """Return the cached value, or None (a miss) while the cache is unreachable."""
        return self._attempt("get", None, *args, **kwargs)

    def get_many(self, *keys, **kwargs):
        """Return the cached values, all None while the cache is unreachable."""
        return self._attempt("get_many", [None] * len(keys), *keys, **kwargs)

    def has(self, *args, **kwargs):
        """Return whether the key is cached (False while the cache is unreachable)."""
        return self._attempt("has", False, *args, **kwargs)

    def set(self, *args, **kwargs):
        """Cache a value; skipped while the cache is unreachable."""
        return self._attempt("set", False, *args, **kwargs)

    def add(self, *args, **kwargs):
        """Cache a value unless present; skipped while the cache is unreachable."""
        return self._attempt("add", False, *args, **kwargs)

    def set_many(self, *args, **kwargs):
        """Cache several values; skipped while the cache is unreachable."""
        return self._attempt("set_many", [], *args, **kwargs)

    def delete(self, *args, **kwargs):
        """Drop a cached value; skipped while the cache is unreachable (what it keeps expires on its timeout)."""
        return self._attempt("delete", False, *args, **kwargs)

    def delete_many(self, *args, **kwargs):
        """Drop cached values; skipped while the cache is unreachable."""
        return self._attempt("delete_many", [], *args, **kwargs)

    def clear(self):
        """Drop every cached value; skipped while the cache is unreachable."""
        return self._attempt("clear", False)


def _note_failure(outage: Outage, operation: str, exc: RedisError) -> None:
    now = time.monotonic()
    outage.last_try = now
    if outage.since is None:
        outage.since = now
    elif now - outage.last_warning <= WARN_EVERY_SECONDS:
        return
    outage.last_warning = now
    log.warning("cache unreachable; %s skipped, answering from the database: %s", operation, exc)

"""The app's cache, failing open: while Redis cannot be reached a read is a miss and a write is skipped.

Every cached value here can be recomputed from the database, so losing Redis should cost speed, never a page:
without this, the dashboard and the customer list answered 500 for as long as Redis was down.
"""
from __future__ import annotations

import logging
import time

from flask_caching import Cache
from redis.exceptions import RedisError

log = logging.getLogger(__name__)
WARN_EVERY_SECONDS = 60.0  # one warning a minute per process is enough to page someone; one per request floods


class FailOpenCache(Cache):
    """Flask-Caching's Cache whose operations fall back to "not cached" while its Redis is unreachable."""

    _last_warning = 0.0

    def _attempt(self, operation: str, fallback, *args, **kwargs):
        try:
            return getattr(super(), operation)(*args, **kwargs)
        except RedisError as exc:
            now = time.monotonic()
            if now - FailOpenCache._last_warning > WARN_EVERY_SECONDS:
                FailOpenCache._last_warning = now
                log.warning("cache unreachable; %s skipped, answering from the database: %s", operation, exc)
            return fallback

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

"""Data versions of the listed tables, read with the request's identity, and the caches they key.

PostgreSQL bumps `change_versions` in every transaction that writes customers, subscriptions or plans (migration
0004). The request's first query (the API token, or the signed-in user) reads them too, so a list knows, without
another round trip, whether its cached count, page anchors or ETag still describe the table exactly. A version
read before a page's rows is never newer than them: a cache may miss once, but never serves stale data as current.
SQLite has no such triggers: `current()` is None there and the lists take their plain path.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from flask import g, has_request_context
from sqlalchemy import literal_column, text

from isp_admin.extensions import db

# One string per table: "<version>.<xmin of its row>". The xmin changes with every write of the row (a restore
# from backup included), so a version number replayed by a restore never matches a tag issued before it.
_SQL = ("(SELECT string_agg(name || '=' || version || '.' || xmin::text, ',') FROM change_versions)")


def column_sql() -> str:
    """Return the SQL text that reads every version as one string (for statements written as text)."""
    return _SQL


def column():
    """Return a column expression that reads every version as one string, to add to the request's first query."""
    return literal_column(_SQL).label("data_versions")


def enabled() -> bool:
    """Whether the database keeps data versions (PostgreSQL)."""
    return db.engine.dialect.name == "postgresql"


def remember(raw: str | None) -> None:
    """Keep the versions read by the request's first query for the rest of the request."""
    if has_request_context():
        g.data_versions = _parse(raw)


def _parse(raw: str | None) -> dict[str, str]:
    return dict(part.split("=", 1) for part in raw.split(",")) if raw else {}


def current() -> dict[str, str] | None:
    """Return this request's data versions (reading them if the identity query did not), or None on SQLite."""
    if not enabled():
        return None
    found = g.get("data_versions") if has_request_context() else None
    if found is None:
        found = _parse(db.session.scalar(text(_SQL)))
        if has_request_context():
            g.data_versions = found
    return found


def key(*tables: str) -> tuple | None:
    """Return the versions of `tables` (and which database) as a cache-key part, or None when not known."""
    versions = current()
    if versions is None or any(t not in versions for t in tables):
        return None
    url = db.engine.url  # one process may serve several databases (tests, benchmarks): never mix their figures
    return (url.host, url.port, url.database, *(versions[t] for t in tables))


class VersionedCache:
    """A small per-process LRU of figures keyed by data versions (counts, page anchors, select choices).

    Per process, not Redis: a hit costs nothing, and a key names the exact versions it was computed at, so workers
    never need to tell each other to forget anything; superseded entries simply age out.
    """

    def __init__(self, size: int = 256):
        self._items: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self._flights: dict = {}  # key → the lock its one computing thread holds

    def get(self, key):
        """Return the cached value for `key`, or None."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key, value) -> None:
        """Cache `value` under `key`, dropping the least recently used entry when full."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def get_or_compute(self, key, compute: Callable):
        """Return the cached value for `key`, computing and caching it on a miss (None keys are never cached).

        One thread computes a missing key while the worker's others asking for it wait: right after a write, eight
        threads would otherwise run the same count (or anchor walk) at once, each as slow as all of them together.
        """
        if key is None:
            return compute()
        found = self.get(key)
        if found is not None:
            return found
        with self._lock:
            flight = self._flights.setdefault(key, threading.Lock())
        with flight:
            found = self.get(key)  # computed by the thread this one waited for
            if found is None:
                found = compute()
                self.put(key, found)
        with self._lock:
            self._flights.pop(key, None)
        return found

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._items.clear()


cache = VersionedCache()

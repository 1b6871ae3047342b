"""An expensive cached value computed once per process, however many requests miss it at the same moment.

The dashboard's figures and trend and the reports take from a hundred milliseconds to seconds at 100,000
customers, and every billing write makes them stale at once. Without this, each request that found the cache
empty computed them itself: sixteen staff pages at once did the same seconds of aggregates sixteen times over,
each sixteen times slower, and the HTTP benchmark's dashboard timed out at 2 s on every connection. Now the first
request computes and the others in the process wait for it and read what it stored; each worker process computes
at most once (a handful, where it was one per request).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_guard = threading.Lock()
_locks: dict[str, threading.Lock] = {}


def read_or_compute_once(key: str, read: Callable[[], T | None], compute_and_store: Callable[[], T]) -> T:
    """Return read() when it finds the value; else compute (and store) it in one thread per key, the others waiting.

    `read` must see what `compute_and_store` stored (the cache): a thread that waited reads it again before
    computing. If the computing thread fails, the next waiter computes in its turn.
    """
    found = read()
    if found is not None:
        return found
    with _guard:
        lock = _locks.setdefault(key, threading.Lock())
    try:
        with lock:
            found = read()
            return found if found is not None else compute_and_store()
    finally:
        with _guard:  # keys carry dates and generation tokens: forget each lock once nobody holds it
            if _locks.get(key) is lock and not lock.locked():
                del _locks[key]


def cached_once(key: str, compute: Callable[[], T], timeout: int) -> T:
    """Return the app cache's value at `key`; on a miss compute it, once per process, and store it for `timeout` s."""
    from isp_admin.extensions import cache

    def compute_and_store() -> T:
        value = compute()
        cache.set(key, value, timeout=timeout)
        return value

    return read_or_compute_once(key, lambda: cache.get(key), compute_and_store)


def pending() -> int:
    """How many keys have a lock right now (tests: none is left behind)."""
    with _guard:
        return len(_locks)

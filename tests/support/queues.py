"""RQ queues of a test's own: a Redis database no other test uses, and deleting every trace of a queue."""
from __future__ import annotations

import redis

from tests.conftest import RUN_ID

# A Redis database no other test uses, so the bulk-generate queue is surely ours alone.
BULK_REDIS_DB = 13


def drop_queue(connection: redis.Redis, queue: str) -> None:
    """Delete the queue, its jobs and results, and what the worker cached under this run's prefix."""
    from rq import Queue

    Queue(queue, connection=connection).delete(delete_jobs=True)
    keys = list(connection.scan_iter(match=f"*{queue}*", count=1000))
    keys += list(connection.scan_iter(match=f"test:{RUN_ID}:*", count=1000))
    for key in connection.scan_iter(match="rq:job:*", count=1000):
        if connection.type(key) == b"hash" and connection.hget(key, "origin") == queue.encode():
            keys += [key, b"rq:results:" + key.removeprefix(b"rq:job:")]
    if keys:
        connection.delete(*keys)

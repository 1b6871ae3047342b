"""PostgreSQL row locks and backends: hold a lock, count its waiters, find the blocked backend and see it end."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select, text

from isp_admin.extensions import db
from isp_admin.models import Customer


def lock_waiters(holder_pid: int | None = None) -> int:
    """How many sessions of this run's own database wait for a lock (held by backend `holder_pid`, if given)."""
    blocked = "AND :pid = ANY(pg_blocking_pids(pid))" if holder_pid else ""
    with db.engine.connect() as connection:
        return connection.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                      f"AND wait_event_type = 'Lock' {blocked}"), {"pid": holder_pid})


@contextmanager
def holding_row_lock(statement) -> Iterator:
    """Hold `SELECT … FOR UPDATE` on a connection of our own until the caller rolls back; yield (it, its pid)."""
    with db.engine.connect() as connection:
        pid = connection.scalar(text("SELECT pg_backend_pid()"))
        connection.execute(statement)
        yield connection, pid


def customer_lock(customer_id: int):
    """The row lock record_payment takes on the customer (SELECT … FOR UPDATE)."""
    return select(Customer.id).where(Customer.id == customer_id).with_for_update()


def blocked_backend(holder_pid: int) -> int:
    """The backend (pid) of the request waiting for a lock `holder_pid` holds."""
    with db.engine.connect() as connection:
        return connection.scalar(text("SELECT pid FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))"),
                                 {"pid": holder_pid})


def backend_gone(pid: int) -> bool:
    """Whether PostgreSQL has ended backend `pid` (and so released its locks)."""
    with db.engine.connect() as connection:
        return not connection.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid})

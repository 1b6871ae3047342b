"""Set-based writes: reserve ids up front and insert many rows at once (COPY on PostgreSQL)."""
from __future__ import annotations

from sqlalchemy import func, insert, select, text

from isp_admin.extensions import db


def is_postgres() -> bool:
    """Whether the session's database is PostgreSQL."""
    return db.engine.dialect.name == "postgresql"


def reserve_ids(table, n: int) -> list[int]:
    """Take `n` ids for `table` up front, so child rows can reference them without RETURNING."""
    if n == 0:
        return []
    if is_postgres():
        return list(db.session.scalars(
            text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
            {"table": table.name, "n": n}))
    # SQLite has one writer at a time, so max(id) is stable for the rest of this transaction.
    start = db.session.scalar(select(func.coalesce(func.max(table.c.id), 0))) + 1
    return list(range(start, start + n))


def bulk_insert(table, rows: list[dict]) -> None:
    """Insert many rows at once: COPY on PostgreSQL, one executemany elsewhere."""
    if not rows:
        return
    if not is_postgres():
        db.session.execute(insert(table), rows)
        return
    columns = list(rows[0])
    raw = db.session.connection().connection.dbapi_connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])

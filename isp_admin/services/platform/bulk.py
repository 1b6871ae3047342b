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


def bulk_insert(table, rows: list[dict], json_columns: tuple[str, ...] = ()) -> None:
    """Insert many rows at once: COPY on PostgreSQL, one executemany elsewhere."""
    if not rows:
        return
    if not is_postgres():
        db.session.execute(insert(table), rows)
        return
    from psycopg.types.json import Json

    columns = list(rows[0])
    wrap = [c in json_columns for c in columns]
    raw = db.session.connection().connection.dbapi_connection
    with raw.cursor() as cursor, cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        if not any(wrap):
            for row in rows:
                copy.write_row([row[c] for c in columns])
            return
        pairs = list(zip(columns, wrap, strict=True))
        for row in rows:
            copy.write_row([Json(row[c]) if w and row[c] is not None else row[c] for c, w in pairs])


def update_dates_by_id(table, column: str, values: dict[int, object], extra: dict | None = None) -> None:
    """Set a date `column` per row id in one statement (unnest on PostgreSQL, executemany elsewhere)."""
    if not values:
        return
    from sqlalchemy import bindparam, update

    extra = extra or {}
    if is_postgres():
        # Identifiers come from our own table metadata, never from input.
        assignments = ", ".join([f"{column} = v.value"] + [f"{k} = :{k}" for k in extra])
        sql = (f"UPDATE {table.name} AS t SET {assignments} "  # noqa: S608
               "FROM unnest(CAST(:ids AS bigint[]), CAST(:vals AS date[])) AS v(id, value) WHERE t.id = v.id")
        db.session.execute(text(sql), {"ids": list(values), "vals": list(values.values()), **extra})
        return
    db.session.execute(
        update(table).where(table.c.id == bindparam("row_id")).values({column: bindparam("row_value"), **extra}),
        [{"row_id": k, "row_value": v} for k, v in values.items()],
        execution_options={"synchronize_session": False})

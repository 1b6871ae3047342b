"""Let PostgreSQL write a list's JSON rows: one text per row, as the API's schema would dump it.

A page of 100 customers dumped by marshmallow costs more than the query that finds them; built in SQL it costs
almost nothing, and the API splices the texts into the envelope. Keys come sorted and compact, as Flask's JSON
provider writes them; tests/api/test_sqljson.py holds every field type to marshmallow's own output. The
expression is one literal SQL string, built once: SQLAlchemy then keys its statement cache on that string
instead of walking a tree of some fifty concatenations on every request.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, String, literal_column
from sqlalchemy.sql import ColumnCollection

# Python's isoformat(): microseconds only when not zero, the UTC offset as +00:00 (UTCDateTime stores UTC).
# One to_char per value (the costliest part of a row): the whole-second test is a cheap comparison.
_ISO = ("CASE WHEN date_trunc('second', {c}) = {c} "
        "THEN to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"') "
        "ELSE to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"') END")


@dataclass(frozen=True)
class JsonField:
    """One key of a row's JSON: the column its value comes from, and how the value is written."""

    key: str
    column: str
    kind: str  # "datetime" (isoformat in UTC), "date" (YYYY-MM-DD) or "plain" (an integer, text or boolean)


def _value(field: JsonField, column: str) -> str:
    if field.kind == "datetime":
        value = f"to_json({_ISO.format(c=column)})"
    elif field.kind == "date":
        value = f"to_json(to_char({column}, 'YYYY-MM-DD'))"
    elif field.kind == "plain":
        value = f"to_json({column})"
    else:
        raise ValueError(f"unknown JSON kind {field.kind!r} ({field.key})")
    return f"coalesce({value}::text, 'null')"


def row_json(columns: ColumnCollection, fields: Iterable[JsonField]) -> ColumnElement:
    """Return a SQL expression giving one row as compact JSON text with `fields` (keys sorted)."""
    return literal_column(row_json_sql(columns, fields), String)


def row_json_sql(columns: ColumnCollection, fields: Iterable[JsonField]) -> str:
    """Return the SQL text of row_json (for statements written as text)."""
    parts = []
    for index, field in enumerate(sorted(fields, key=lambda f: f.key)):
        if not field.key.isidentifier():  # keys are written into the SQL text as they are
            raise ValueError(f"unsafe JSON key {field.key!r}")
        column = columns[field.column]
        parts.append("'" + ("{" if index == 0 else ",") + f'"{field.key}":\' || '
                     + _value(field, f"{column.table.name}.{column.name}"))
    return "(" + " || ".join(parts) + " || '}')"

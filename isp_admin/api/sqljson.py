"""Let PostgreSQL write a list's JSON rows: one text per row, as the marshmallow schema would dump it.

A page of 100 customers dumped by marshmallow costs more than the query that finds them; built in SQL it costs
almost nothing, and the view splices the texts into the envelope. Keys come sorted and compact, as Flask's JSON
provider writes them; tests/api/test_sqljson.py holds every field type to marshmallow's own output. The
expression is one literal SQL string, built once: SQLAlchemy then keys its statement cache on that string
instead of walking a tree of some fifty concatenations on every request.
"""
from __future__ import annotations

import marshmallow as ma
from sqlalchemy import ColumnElement, String, literal_column
from sqlalchemy.sql import ColumnCollection

# Python's isoformat(): microseconds only when not zero, the UTC offset as +00:00 (UTCDateTime stores UTC).
# One to_char per value (the costliest part of a row): the whole-second test is a cheap comparison.
_ISO = ("CASE WHEN date_trunc('second', {c}) = {c} "
        "THEN to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"') "
        "ELSE to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"') END")


def _value(field: ma.fields.Field, column: str) -> str:
    if isinstance(field, ma.fields.DateTime):
        value = f"to_json({_ISO.format(c=column)})"
    elif isinstance(field, ma.fields.Date):
        value = f"to_json(to_char({column}, 'YYYY-MM-DD'))"
    elif isinstance(field, ma.fields.Integer | ma.fields.String | ma.fields.Boolean):
        value = f"to_json({column})"
    else:
        raise TypeError(f"no SQL JSON for {type(field).__name__} ({field.name}); dump it with marshmallow")
    return f"coalesce({value}::text, 'null')"


def row_json(schema: type[ma.Schema], columns: ColumnCollection) -> ColumnElement:
    """Return a SQL expression giving one row as the compact JSON text `schema` would dump (keys sorted)."""
    return literal_column(row_json_sql(schema, columns), String)


def row_json_sql(schema: type[ma.Schema], columns: ColumnCollection) -> str:
    """Return the SQL text of row_json (for statements written as text)."""
    fields = schema().dump_fields
    parts = []
    for index, name in enumerate(sorted(fields, key=lambda n: fields[n].data_key or n)):
        field = fields[name]
        key = field.data_key or name
        if not key.isidentifier():  # keys are written into the SQL text as they are
            raise ValueError(f"unsafe JSON key {key!r}")
        column = columns[field.attribute or name]
        parts.append("'" + ("{" if index == 0 else ",") + f'"{key}":\' || '
                     + _value(field, f"{column.table.name}.{column.name}"))
    return "(" + " || ".join(parts) + " || '}')"

"""Describe a schema's dump as the JSON fields PostgreSQL writes for a list (isp_admin.services.platform.sqljson).

The API owns the shape of its JSON and the service owns the SQL: a view hands the service this description, plain
values, and the service builds the statement.
"""
from __future__ import annotations

from functools import cache

import marshmallow as ma

from isp_admin.services.platform.sqljson import JsonField


def _kind(field: ma.fields.Field) -> str:
    if isinstance(field, ma.fields.DateTime):
        return "datetime"
    if isinstance(field, ma.fields.Date):
        return "date"
    if isinstance(field, ma.fields.Integer | ma.fields.String | ma.fields.Boolean):
        return "plain"
    raise TypeError(f"no SQL JSON for {type(field).__name__} ({field.name}); dump it with marshmallow")


@cache  # on the hot path of every list request; a schema's fields never change
def json_fields(schema: type[ma.Schema]) -> tuple[JsonField, ...]:
    """Return how `schema` dumps a row: each key, the attribute (column) it reads, and its kind of value."""
    return tuple(JsonField(field.data_key or name, field.attribute or name, _kind(field))
                 for name, field in schema().dump_fields.items())

"""Keyset (cursor) pagination over (sort value, id) pairs: constant cost at any depth."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import tuple_

from isp_admin.errors import Invalid

_BIGINT = 2**63


@dataclass
class Page:
    """One page of rows with the cursors that lead to its neighbours."""

    rows: list
    next_cursor: str | None
    prev_cursor: str | None
    total: int | None = None
    total_capped: bool = False
    extra: dict = field(default_factory=dict)


def encode_cursor(value, row_id: int) -> str:
    """Encode a (sort value, id) position as an opaque URL-safe string."""
    if isinstance(value, date):
        value = value.isoformat()
    return base64.urlsafe_b64encode(json.dumps([value, row_id]).encode()).decode().rstrip("=")


def _fits(value, kind: type) -> bool:
    # The database would reject these with an error, not a page: booleans, NUL bytes, ints beyond BIGINT.
    if kind is int:
        return type(value) is int and -_BIGINT <= value < _BIGINT
    return type(value) is str and "\x00" not in value


def decode_cursor(cursor: str, value_type: type = str) -> tuple:
    """Decode a cursor made by encode_cursor whose sort value is a `value_type`, or raise Invalid."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value, row_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if value_type is date and type(value) is str:
            value = date.fromisoformat(value)
        elif not _fits(value, value_type):
            raise ValueError
        if not _fits(row_id, int):
            raise ValueError
        return value, row_id
    except (ValueError, TypeError, json.JSONDecodeError, UnicodeDecodeError):
        raise Invalid("The page link is not valid.", {"cursor": "Malformed cursor."}) from None


def keyset_page(session, stmt, sort_col, id_col, *, descending: bool, size: int,
                after: str | None = None, before: str | None = None, sort_key: str = "", offset: int = 0,
                start_at: tuple | None = None, skipped: int | None = None, as_rows: bool = False,
                outer=None) -> Page:
    """Run `stmt` for one page after or before a cursor (or `offset` rows in), ordered by (sort_col, id_col).

    `start_at` (a (sort value, id) page anchor) starts the page at that row, `offset` rows further on; `skipped`
    is then how many rows precede the page in the whole list. `as_rows` gives Row objects (attribute access, the
    cheap kind for a template) instead of mappings. `outer(page, ascending)` wraps the ordered, limited statement
    (as a subquery) in the one actually run, which must keep the order and the sort and id columns: rows skipped
    by OFFSET are then never projected (a page's JSON is built for its own rows only).
    """
    backwards = before is not None
    cursor = before if backwards else after
    ascending = descending == backwards  # walking backwards flips the order
    if cursor:
        value, row_id = decode_cursor(cursor, sort_col.type.python_type)
        position = tuple_(sort_col, id_col)
        stmt = stmt.where(position > tuple_(value, row_id) if ascending else position < tuple_(value, row_id))
    elif start_at is not None:
        position, anchor = tuple_(sort_col, id_col), tuple_(*start_at)
        stmt = stmt.where(position >= anchor if ascending else position <= anchor)
    order = (sort_col.asc(), id_col.asc()) if ascending else (sort_col.desc(), id_col.desc())
    stmt = stmt.order_by(*order).limit(size + 1)
    if offset and not cursor:
        stmt = stmt.offset(offset)
    result = session.execute(outer(stmt.subquery("page"), ascending) if outer is not None else stmt)
    rows = list(result if as_rows else result.mappings())
    more = len(rows) > size
    rows = rows[:size]
    if backwards:
        rows.reverse()
    def cursor_of(row):
        values = row._mapping if as_rows else row
        return encode_cursor(values[sort_key], values["id"])
    has_next = more if not backwards else True
    has_prev = more if backwards else (cursor is not None or (offset if skipped is None else skipped) > 0)
    return Page(
        rows=rows,
        next_cursor=cursor_of(rows[-1]) if rows and has_next else None,
        prev_cursor=cursor_of(rows[0]) if rows and has_prev else None,
    )

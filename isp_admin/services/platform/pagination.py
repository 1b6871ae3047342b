"""Keyset (cursor) pagination over (sort value, id) pairs: constant cost at any depth."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import func, select, tuple_

from isp_admin.errors import Invalid
from isp_admin.extensions import db

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
    number: int | None = None  # the page's number (1 is the first) when the list is paged by number
    size: int | None = None

    @property
    def last_number(self) -> int | None:
        """The number of the last page that can be reached by number (None when unknown)."""
        if self.total is None or not self.size:
            return None
        reachable = MAX_OFFSET // self.size + 1  # deeper pages are reached by the Next cursor, not by number
        return max(1, min(-(-self.total // self.size), reachable))

    def window(self, around: int = 2) -> list[int | None]:
        """The page numbers to link to: the first, the last, and `around` either side of this one (None: a gap)."""
        last = self.last_number
        if self.number is None or last is None:
            return []
        shown = sorted({1, last, *range(max(1, self.number - around), min(last, self.number + around) + 1)})
        numbers: list[int | None] = []
        for number in shown:
            if numbers and number - numbers[-1] > 1:
                numbers.append(None)
            numbers.append(number)
        return numbers


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


COUNT_CAP = 10_000  # a list counts at most this many rows (and says so): an exact count of millions costs a scan
# A page reached by its number skips at most this many rows (OFFSET); the Next cursor walks on from there.
MAX_OFFSET = COUNT_CAP


def page_offset(number: int, size: int) -> tuple[int, int]:
    """Return (page number, rows to skip) for page `number` of `size` rows, within MAX_OFFSET."""
    number = max(1, min(number, MAX_OFFSET // max(1, size) + 1))
    return number, (number - 1) * size


def _capped_count(stmt, id_col) -> tuple[int, bool]:
    capped = stmt.with_only_columns(id_col).limit(COUNT_CAP + 1).subquery()
    total = db.session.scalar(select(func.count()).select_from(capped))
    return min(total, COUNT_CAP), total > COUNT_CAP


def ordering_column(columns, ordering: str, allowed: tuple[str, ...]):
    """Return (sort column, descending) for an ordering such as "-due_date"; refuse names not in `allowed`."""
    name = ordering.lstrip("-")
    if name not in allowed:
        raise Invalid("Unknown ordering.", {"ordering": f"One of {', '.join(allowed)}, optionally with '-'."})
    return columns[name], ordering.startswith("-")


def keyset_by_id(stmt, id_col, size: int, after: str | None, before: str | None, *, offset: int = 0,
                 sort_col=None, descending: bool = True) -> Page:
    """Run one page of `stmt` (newest id first unless `sort_col` says otherwise), with a count capped at COUNT_CAP."""
    sort_col = id_col if sort_col is None else sort_col
    page = keyset_page(db.session, stmt, sort_col, id_col, descending=descending, size=size, after=after,
                       before=before, sort_key=sort_col.name, offset=offset)
    page.total, page.total_capped = _capped_count(stmt, id_col)
    return page

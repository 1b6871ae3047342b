"""Index-friendly lookups of what staff type: a document number (whole, short or its leading part) or a reference.

Document numbers read PREFIX-YYYY-NNNNNN (INV-2026-000123, CN-2026-000007). Staff type them whole, short
("inv-2026-123" is INV-2026-000123), without the prefix ("2026-123") or only their beginning ("INV-2026-00"). A
whole number is one equality on the unique index; a beginning is a range on that same index (`>=` it and `<` the
next string after it) that a LIKE re-checks, so the answer is right under any collation and never scans.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import and_, or_

from isp_admin.database import escape_like

MAX_QUERY_LENGTH = 100  # longer than any number, reference or name anyone types into a search box
_WHOLE = re.compile(r"(?:(?P<prefix>[A-Z]{2,4})-)?(?P<year>\d{4})-(?P<seq>\d{1,6})")
_LEADING = re.compile(r"(?P<prefix>[A-Z]{2,4})(?:-\d{0,4}(?:-\d{0,6})?)?")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class NumberQuery:
    """What a typed text can mean as a document number: a prefix it names, a whole number, a leading part."""

    prefix: str | None
    year: int | None = None
    seq: int | None = None
    leading: str | None = None

    def whole(self, prefix: str) -> str | None:
        """The whole number this query names under `prefix` (None when it names only a beginning)."""
        if self.year is None or self.seq is None:
            return None
        return f"{prefix}-{self.year:04d}-{self.seq:06d}"


def parse_number(text: str | None) -> NumberQuery | None:
    """Read `text` as (part of) a document number, or return None when it cannot be one."""
    if not text:
        return None
    typed = _SPACES.sub("", text).upper()
    if len(typed) > 20:  # the numbers' column width
        return None
    whole = _WHOLE.fullmatch(typed)
    if whole:
        seq = whole["seq"]
        # "INV-2026-00012" is both INV-2026-000012 and the beginning of INV-2026-000120..000129.
        leading = typed if whole["prefix"] and len(seq) < 6 else None
        return NumberQuery(whole["prefix"], int(whole["year"]), int(seq), leading)
    if _LEADING.fullmatch(typed):
        # A trailing hyphen adds nothing, and collations that ignore punctuation would misplace the range's end.
        return NumberQuery(typed.split("-", 1)[0], leading=typed.rstrip("-"))
    return None


def number_condition(column, query: NumberQuery | None, prefix: str):
    """Return the condition on a number column for `query` under `prefix`, or None when it cannot match."""
    if query is None or (query.prefix is not None and query.prefix != prefix):
        return None
    conditions = []
    whole = query.whole(prefix)
    if whole is not None:
        conditions.append(column == whole)
    if query.leading is not None and query.leading != whole:
        conditions.append(starts_with(column, query.leading))
    return or_(*conditions) if conditions else None


def _successor(text: str) -> str | None:
    """The least string greater than every string starting with `text` (None: there is none)."""
    while text:
        last = ord(text[-1])
        if last < 0x10FFFF and not 0xD7FF <= last < 0xE000:  # skip the surrogates, which no column may hold
            return text[:-1] + chr(last + 1)
        text = text[:-1]
    return None


def starts_with(column, text: str):
    """Return `column` starts with `text`, as a range the column's b-tree index answers (plus an exact re-check)."""
    pattern = escape_like(text) + "%"
    upper = _successor(text)
    bounds = [column >= text] + ([column < upper] if upper is not None else [])
    return and_(*bounds, column.like(pattern, escape="\\"))

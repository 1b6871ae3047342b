"""CSV for people's spreadsheets: streamed line by line, safe to open in Excel, amounts as decimal text.

Formula safety follows OWASP's "CSV injection" advice: a text cell that starts with = + - @, a tab or a carriage
return is what a spreadsheet would run as a formula, so it gets a leading apostrophe (shown as text, never run).
Only text from people is touched: numbers, amounts and dates we format ourselves are written as they are, so a
negative amount stays a number. The file starts with a UTF-8 byte order mark, which Excel needs to read accents.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

BOM = "\ufeff"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
LINES_PER_CHUNK = 200  # a chunk of text per write to the socket, not one per row


def money(cents: int | None) -> Decimal | None:
    """Return integer cents as an exact decimal amount (2500 -> Decimal('25.00')), never through float."""
    return None if cents is None else Decimal(int(cents)).scaleb(-2)


def neutralise(text: str) -> str:
    """Return text a spreadsheet shows as text: a leading formula character gets an apostrophe before it."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def cell(value) -> str:
    """Return one value as CSV text: dates ISO 8601, amounts as decimals, text formula-safe, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value.isoformat(timespec="seconds") + "Z"  # stored in UTC (models.base.UTCDateTime)
    if isinstance(value, date | int | Decimal):
        return value.isoformat() if isinstance(value, date) else str(value)
    return neutralise(str(value))


def lines(header: list[str], rows: Iterable[Iterable]) -> Iterator[str]:
    """Yield the CSV text (byte order mark and header first) in chunks of lines, pulling rows as it goes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralise(title) for title in header])
    yield BOM + buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    pending = 0
    for row in rows:
        writer.writerow([cell(value) for value in row])
        pending += 1
        if pending == LINES_PER_CHUNK:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if pending:
        yield buffer.getvalue()

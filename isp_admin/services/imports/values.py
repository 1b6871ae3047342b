"""Cell values: dates in the file's format, amounts with either decimal mark, bounded texts. Each parser returns
the value or raises ValueError with the words a person needs to fix the cell."""
from __future__ import annotations

import re
from datetime import date

from isp_admin.services.billing.money import parse_money

DATE_FORMATS = {"iso": "YYYY-MM-DD", "dmy": "DD/MM/YYYY", "mdy": "MM/DD/YYYY"}
_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})(?:[ T].*)?$")  # a time after the date (a datetime export) is dropped
_DAY_MONTH = re.compile(r"^(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{4})(?: .*)?$")


def parse_date(text: str, date_format: str) -> date:
    """Parse a date written in `date_format` (iso, dmy or mdy)."""
    if date_format == "iso":
        match = _ISO.match(text)
        parts = (match.group(1), match.group(2), match.group(3)) if match else None
    else:
        match = _DAY_MONTH.match(text)
        if match:
            first, second, year = match.groups()
            parts = (year, second, first) if date_format == "dmy" else (year, first, second)
        else:
            parts = None
    if parts is None:
        raise ValueError(f"Not a date in the form {DATE_FORMATS[date_format]} (chosen on the upload form).")
    try:
        return date(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        raise ValueError("No such date.") from None


def parse_amount(text: str, decimal_comma: bool) -> int:
    """Parse an amount ('1,234.50', or '1.234,50' with a decimal comma) into cents; negative amounts too."""
    raw = text.strip().replace(" ", "").replace("\u00a0", "")
    negative = raw.startswith("-") or (raw.startswith("(") and raw.endswith(")"))
    raw = raw.strip("()").lstrip("-+")
    if decimal_comma:
        raw = raw.replace(".", "\x00").replace(",", ".").replace("\x00", ",")
    cents = parse_money(raw)
    return -cents if negative else cents


def bounded(text: str, limit: int) -> str | None:
    """Return the text (None when empty), or raise when it is longer than the column takes."""
    if len(text) > limit:
        raise ValueError(f"At most {limit:,} characters (this has {len(text):,}).")
    return text or None


def whole_number(text: str, low: int, high: int) -> int:
    """Parse an integer between `low` and `high`."""
    if not re.fullmatch(r"\d{1,4}", text) or not low <= int(text) <= high:
        raise ValueError(f"A whole number from {low} to {high}.")
    return int(text)


def chunks(values: list, size: int = 1000):
    """Yield `values` a thousand at a time: one IN (...) per chunk stays within every driver's parameter limit."""
    for start in range(0, len(values), size):
        yield values[start:start + size]

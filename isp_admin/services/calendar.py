"""Bill dates: billing day B falls on min(B, last day of the month)."""
from __future__ import annotations

import calendar
from datetime import date


def bill_date(year: int, month: int, billing_day: int) -> date:
    """Return the bill date for `billing_day` in the given month (29–31 roll back to month end)."""
    return date(year, month, min(billing_day, calendar.monthrange(year, month)[1]))


def add_months(year: int, month: int, months: int) -> tuple[int, int]:
    """Return (year, month) shifted by `months`."""
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def next_bill_date_after(day: date, billing_day: int) -> date:
    """Return the first bill date strictly after `day`."""
    candidate = bill_date(day.year, day.month, billing_day)
    if candidate > day:
        return candidate
    year, month = add_months(day.year, day.month, 1)
    return bill_date(year, month, billing_day)

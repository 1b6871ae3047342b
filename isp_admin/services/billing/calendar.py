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


def bill_date_on_or_before(day: date, billing_day: int) -> date:
    """Return the last bill date on or before `day`."""
    candidate = bill_date(day.year, day.month, billing_day)
    if candidate <= day:
        return candidate
    year, month = add_months(day.year, day.month, -1)
    return bill_date(year, month, billing_day)


def period_containing(day: date, billing_day: int) -> tuple[date, date]:
    """Return the billing period [start, end) that contains `day`."""
    start = bill_date_on_or_before(day, billing_day)
    return start, next_bill_date_after(start, billing_day)


def due_periods(next_bill: date, billing_day: int, as_of: date) -> list[tuple[date, date, int, int]]:
    """Return every unbilled period starting on or before `as_of`: (start, end, days, period_days).

    The first may be partial (a start between bill dates); each later one is a whole period.
    """
    periods = []
    start = next_bill
    while start <= as_of:
        period_start, period_end = period_containing(start, billing_day)
        periods.append((start, period_end, (period_end - start).days, (period_end - period_start).days))
        start = period_end
    return periods


def round_half_up(numerator: int, denominator: int) -> int:
    """Divide non-negative integers, rounding halves up (never through float)."""
    if numerator < 0 or denominator <= 0:
        raise ValueError("round_half_up takes a non-negative numerator and a positive denominator")
    return (2 * numerator + denominator) // (2 * denominator)


def prorate(price_cents: int, days: int, period_days: int) -> int:
    """Return round_half_up(price × days / period_days)."""
    return round_half_up(price_cents * days, period_days)


def tax_on(amount_cents: int, tax_rate_bp: int) -> int:
    """Return round_half_up(amount × rate / 10000) for a rate in basis points."""
    return round_half_up(amount_cents * tax_rate_bp, 10000)

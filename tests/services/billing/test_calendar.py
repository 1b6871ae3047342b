"""Bill dates: billing day B falls on min(B, last day of the month) (DESIGN §3)."""
from __future__ import annotations

from datetime import date

import pytest

from isp_admin.services.billing.calendar import add_months, bill_date, next_bill_date_after


@pytest.mark.parametrize(("year", "day", "expected"), [
    (2028, 31, date(2028, 2, 29)),   # leap year
    (2027, 31, date(2027, 2, 28)),
    (2028, 30, date(2028, 2, 29)),
    (2027, 29, date(2027, 2, 28)),
    (2028, 29, date(2028, 2, 29)),
    (2100, 29, date(2100, 2, 28)),   # not a leap year (divisible by 100)
    (2000, 29, date(2000, 2, 29)),   # a leap year (divisible by 400)
    (2027, 28, date(2027, 2, 28)),
    (2027, 1, date(2027, 2, 1)),
])
def test_a_late_billing_day_rolls_back_to_the_end_of_february(year, day, expected):
    assert bill_date(year, 2, day) == expected


def test_billing_day_31_bills_on_the_30th_in_thirty_day_months():
    assert [bill_date(2026, m, 31) for m in (4, 6, 9, 11)] == [
        date(2026, 4, 30), date(2026, 6, 30), date(2026, 9, 30), date(2026, 11, 30)]
    assert bill_date(2026, 4, 30) == date(2026, 4, 30)
    assert bill_date(2026, 5, 31) == date(2026, 5, 31)


def test_billing_day_31_over_a_year_lands_on_every_month_end():
    dates = [bill_date(2028, month, 31) for month in range(1, 13)]
    assert [d.day for d in dates] == [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


@pytest.mark.parametrize(("start", "months", "expected"), [
    ((2026, 1), 1, (2026, 2)),
    ((2026, 11), 2, (2027, 1)),
    ((2026, 12), 1, (2027, 1)),
    ((2026, 12), 13, (2028, 1)),
    ((2026, 1), 0, (2026, 1)),
    ((2026, 1), -1, (2025, 12)),
    ((2026, 3), -3, (2025, 12)),
    ((2026, 3), -2, (2026, 1)),
    ((2026, 1), -25, (2023, 12)),
    ((2026, 6), 120, (2036, 6)),
])
def test_add_months_moves_across_year_boundaries_both_ways(start, months, expected):
    assert add_months(*start, months) == expected


@pytest.mark.parametrize(("day", "billing_day", "expected"), [
    (date(2026, 12, 31), 31, date(2027, 1, 31)),    # on the bill date: strictly after means next month
    (date(2026, 12, 15), 1, date(2027, 1, 1)),      # across the year end
    (date(2026, 12, 30), 31, date(2026, 12, 31)),
    (date(2027, 1, 31), 31, date(2027, 2, 28)),
    (date(2028, 1, 31), 31, date(2028, 2, 29)),
    (date(2027, 2, 28), 31, date(2027, 3, 31)),     # Feb's rolled bill date is past; March has its 31st
    (date(2027, 2, 27), 31, date(2027, 2, 28)),
    (date(2026, 3, 14), 15, date(2026, 3, 15)),
    (date(2026, 3, 15), 15, date(2026, 4, 15)),
    (date(2026, 4, 30), 30, date(2026, 5, 30)),
])
def test_next_bill_date_after_is_strictly_later(day, billing_day, expected):
    assert next_bill_date_after(day, billing_day) == expected


def test_walking_bill_dates_through_a_year_never_skips_or_repeats_a_month():
    day, seen = date(2026, 12, 31), []
    for _ in range(14):
        day = next_bill_date_after(day, 31)
        seen.append((day.year, day.month))
    assert seen == [add_months(2027, 1, i) for i in range(14)]

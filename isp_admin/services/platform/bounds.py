"""Bounded values (DESIGN §3): the one place that says which dates, amounts, counts and texts a person or script may
send. Services check here, so a page, the API, the CLI and a job refuse the same value with the same words.

Windows (configurable):
- every date: not before EARLIEST_DATE (default 2000-01-01);
- service dates (a subscription's start, a billing preview, a report): not after today + SERVICE_HORIZON_DAYS (366);
- what already happened (money received, a cancellation, a real billing run): not after today;
- money: 0 < amount ≤ MAX_AMOUNT_CENTS (10^11 minor units); a price ≤ MAX_PRICE_CENTS (10^10);
- a billing catch-up of more than MAX_CATCH_UP_PERIODS (12) periods is held for review, not issued.
"""
from __future__ import annotations

from datetime import date, timedelta

from flask import current_app

from isp_admin.errors import Invalid

MAX_AMOUNT_CENTS = 10**11
MAX_PRICE_CENTS = 10**10
MAX_LINES = 200
MAX_REASON = 500
MAX_PAGE_NUMBER = 1_000_000  # a ?page= beyond this lands on the last page; beyond bigint it was a database error


def earliest() -> date:
    """The first date any value may name (EARLIEST_DATE)."""
    return date.fromisoformat(str(current_app.config.get("EARLIEST_DATE") or "2000-01-01"))


def horizon(today: date) -> date:
    """The last date a service date may name: today + SERVICE_HORIZON_DAYS."""
    return today + timedelta(days=int(current_app.config.get("SERVICE_HORIZON_DAYS", 366)))


def max_catch_up_periods() -> int:
    """How many due periods of one subscription a run issues before it holds the subscription for review."""
    return int(current_app.config.get("MAX_CATCH_UP_PERIODS", 12))


def date_error(value, today: date, *, future: bool) -> str | None:
    """Why `value` is outside its window (None when it is inside): from EARLIEST_DATE to today, or the horizon."""
    if not isinstance(value, date):
        return "A date (YYYY-MM-DD)."
    last = horizon(today) if future else today
    if value < earliest():
        return f"On or after {earliest():%d %b %Y}."
    if value > last:
        return "Today or earlier." if not future else f"On or before {last:%d %b %Y}."
    return None


def check_dates(today: date, *, future: bool, message: str = "Please correct the date.", **values) -> None:
    """Raise Invalid naming every field of `values` whose date is outside its window."""
    errors = {field: why for field, value in values.items()
              if (why := date_error(value, today, future=future)) is not None}
    if errors:
        raise Invalid(message, errors)


def check_service_dates(today: date, **values) -> None:
    """Service dates (a start, a preview, a report): EARLIEST_DATE to today + SERVICE_HORIZON_DAYS."""
    check_dates(today, future=True, **values)


def check_past_dates(today: date, **values) -> None:
    """What already happened (money received, a cancellation, a real run): EARLIEST_DATE to today."""
    check_dates(today, future=False, **values)


def check_text(field: str, value: str | None, limit: int = MAX_REASON, required: bool = False) -> str | None:
    """Return `value` stripped (None when empty); raise Invalid when it is required and empty, or too long."""
    text = (value or "").strip() or None
    if required and text is None:
        raise Invalid("Please fill in the highlighted field.", {field: "Required."})
    if text is not None and len(text) > limit:
        raise Invalid("Please shorten the highlighted field.", {field: f"At most {limit} characters."})
    return text

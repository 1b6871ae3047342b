"""The business calendar: 'today' is the ISP's date in its configured time zone."""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from flask import current_app


def today() -> date:
    """Return today's date in the ISP's TIMEZONE."""
    return datetime.now(ZoneInfo(current_app.config["TIMEZONE"])).date()

"""The business calendar: 'today' is the ISP's date in its configured time zone; instants are UTC."""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from flask import current_app

from isp_admin.models import base


def today() -> date:
    """Return today's date in the ISP's TIMEZONE."""
    return datetime.now(ZoneInfo(current_app.config["TIMEZONE"])).date()


def utcnow() -> datetime:
    """Return the current instant as an aware UTC datetime, the clock the models stamp their rows with."""
    return base.utcnow()

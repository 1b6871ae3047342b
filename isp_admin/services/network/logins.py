"""A PPPoE login is the same login whatever its case (migration 0011): stored as typed, compared lower-cased.

Staff type a login one way, a customer's router may send it another; radacct and radpostauth keep what the router
sent. Every comparison of logins goes through these, so each is served by an index on lower(...).
"""
from __future__ import annotations

from sqlalchemy import func


def login_key(login: str | None) -> str | None:
    """The form a login is compared in (logins are ASCII, so Python's lower() is SQL's)."""
    return login.lower() if login else login


def login_column(column):
    """A login column in the form it is compared in: what the lower(...) indexes hold."""
    return func.lower(column)


def same_login(left, right):
    """SQL: these two login columns name the same login."""
    return func.lower(left) == func.lower(right)

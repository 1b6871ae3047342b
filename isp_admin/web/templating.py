"""Jinja filters and globals, and small helpers the views share."""
from __future__ import annotations

import functools
import time
from functools import partial

from flask import Flask, current_app, flash, request, session
from flask_wtf.csrf import generate_csrf
from markupsafe import Markup, escape
from wtforms import Form

from isp_admin.errors import AppError
from isp_admin.services.billing.money import format_cents
from isp_admin.services.platform.audit_words import describe_events
from isp_admin.services.platform.versions import VersionedCache
from isp_admin.web.access import can


def money(cents, currency: str | None = None) -> str:
    """Format integer cents in the given (or the ISP's) currency."""
    return format_cents(cents, currency or current_app.config["CURRENCY"])


BADGE_COLOURS = {"active": "success", "pending": "info", "suspended": "warning", "cancelled": "secondary",
                 "closed": "secondary"}


@functools.lru_cache(maxsize=256)  # a handful of statuses and reasons: a list page builds each badge once, not per row
def status_badge(status: str, reason: str | None = None) -> Markup:
    """Return a status as a coloured badge (a Python global: a list renders one per row, a macro costs 10× more)."""
    text = escape(status) + (Markup(" · ") + escape(reason.replace("_", " ")) if reason else "")
    colour = BADGE_COLOURS.get(status, "light")  # one of our constants; `text` is escaped above
    return Markup(f'<span class="badge text-bg-{colour}">{text}</span>')  # noqa: S704


def url_with(**changes) -> str:
    """Return the current URL with some query arguments replaced (None removes one)."""
    from flask import url_for

    args = request.args.to_dict()
    for key, value in changes.items():
        if value is None:
            args.pop(key, None)
        else:
            args[key] = value
    return url_for(request.endpoint, **(request.view_args or {}), **args)


def page_size() -> int:
    """Return the requested list page size (?size=), within the configured bounds."""
    size = request.args.get("size", type=int) or current_app.config["PAGE_SIZE"]
    return max(1, min(size, current_app.config["MAX_PAGE_SIZE"]))


def show_form_error(form: Form, exc: AppError) -> bool:
    """Show a service error on the form's fields and as a flash; return whether a field took it.

    The unit of work (isp_admin/web/unit_of_work.py) has already rolled the refused write back.
    """
    placed = False
    for name, message in exc.details.items():
        field = getattr(form, name, None)
        if field is not None and hasattr(field, "errors"):
            field.errors = [*list(field.errors or []), message]
            placed = True
    flash(exc.message, "danger")
    return placed


class _EndpointSet:
    """`'x.y' in url_endpoints` in templates: whether the app has that endpoint."""

    def __init__(self, app: Flask):
        self._app = app

    def __contains__(self, endpoint: str) -> bool:
        return endpoint in self._app.view_functions


_SIGNED_CSRF = VersionedCache(size=4096)
CSRF_REUSE_SECONDS = 300


def csrf_token() -> str:
    """Return the signed CSRF token for this session, reusing one signed in the last five minutes.

    Every page carries one (the sign-out form), and signing costs ~80 µs (itsdangerous compresses each payload);
    a token signed minutes ago is as valid, well inside WTF_CSRF_TIME_LIMIT.
    """
    raw = session.get("csrf_token")
    if raw:
        hit = _SIGNED_CSRF.get(raw)
        if hit and time.monotonic() - hit[1] < CSRF_REUSE_SECONDS:
            return hit[0]
    token = generate_csrf()
    _SIGNED_CSRF.put(session["csrf_token"], (token, time.monotonic()))
    return token


def datetime_utc(value) -> str:
    """A timestamp as the pages show it: 2026-12-05 11:24 UTC ('—' when there is none)."""
    return value.strftime("%Y-%m-%d %H:%M") + " UTC" if value else "—"


def byte_count(value: int | None) -> str:
    """Octets in the unit a person reads: 1.5 GB, 320 MB, 12 kB (decimal, as ISPs quote caps)."""
    if value is None:
        return "—"
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if value >= size:
            return f"{value / size:,.1f} {unit}"
    return f"{value:,} B"


def register_template_helpers(app: Flask) -> None:
    """Install the filters and globals."""
    app.add_template_filter(money, "money")
    app.add_template_filter(datetime_utc, "datetime")
    app.add_template_filter(byte_count, "bytes")
    app.add_template_global(can, "can")
    app.add_template_global(url_with, "url_with")
    app.add_template_global(status_badge, "status_badge")
    app.add_template_global(csrf_token, "csrf_token")
    from isp_admin.web import list_rows  # it builds on money and status_badge above

    # The staff lists' rows, rendered in Python (one pass, every value escaped): see isp_admin/web/list_rows.py.
    for render in (list_rows.customer_rows, list_rows.invoice_rows, list_rows.payment_rows):
        app.add_template_global(render, render.__name__)
    app.add_template_global(list_rows.invoice_badge, "invoice_status_badge")
    app.add_template_global(list_rows.payment_badge, "payment_status_badge")
    # The audit_table macro reads events in the staff's words: one query names every record they mention.
    app.add_template_global(partial(describe_events, money=money), "audit_entries")
    # Navigation shows a feature's link once its pages exist (blueprints are registered in one list).
    app.jinja_env.globals["url_endpoints"] = _EndpointSet(app)

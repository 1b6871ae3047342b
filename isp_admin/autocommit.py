"""Read-only list requests without a transaction: API lists (and their conditional GETs) and staff lists run in
autocommit.

An API list request makes two or three statements (the token with the data versions, the page, now and then a
count); in a transaction it also pays a BEGIN and a ROLLBACK, two round trips of the five it made. In autocommit each
statement sees the latest committed data: the versions (read first) are never newer than the page, so an ETag
can only be older than its body, which costs a client one full answer, never a stale 304.
"""
from __future__ import annotations

from flask import Flask, current_app, request

from isp_admin.extensions import db
from isp_admin.services.platform import versions

AUTOCOMMIT_READS = "autocommit_reads"  # a view function attribute, set by `autocommit_reads` below


def autocommit_reads(view):
    """Mark a GET view whose statements need no shared snapshot (one page of one list, its count, the user)."""
    setattr(view, AUTOCOMMIT_READS, True)
    return view


def register_autocommit_reads(app: Flask) -> None:
    """Run marked GET views' statements in autocommit: before any hook touches the database (the rate limiter
    looks the token up), so the request's first statement already runs without BEGIN."""
    marked: dict[str | None, bool] = {}

    def without_transaction():
        if request.method not in ("GET", "HEAD") or not versions.enabled():
            return
        endpoint = request.endpoint
        if endpoint not in marked:  # decided once per endpoint
            view = current_app.view_functions.get(endpoint) if endpoint else None
            marked[endpoint] = bool(getattr(view, AUTOCOMMIT_READS, False))
        if marked[endpoint]:
            db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})

    # First of all before-request hooks: the limiter's key function runs the token lookup.
    app.before_request_funcs.setdefault(None, []).insert(0, without_transaction)

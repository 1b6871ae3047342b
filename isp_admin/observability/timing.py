"""Per-request timing: X-Response-Time and Server-Timing (app time, database time and query count).

Anonymous pages get neither: their figures would tell a known email from an unknown one (issue 12).

SQL statements are timed by engine events into an accumulator held in a context variable: each thread (werkzeug
threaded, gunicorn gthread) or greenlet has its own, so concurrent requests never add to each other's figures.
Nothing is logged per query; the cost is two clock reads and an addition per statement.
"""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter

from flask import Flask, current_app, g, request, request_started
from sqlalchemy import event
from sqlalchemy.engine import Engine

_START_KEY = "isp_admin.timing.statement_start"


@dataclass
class RequestTiming:
    """What one request has spent so far: since it started, and inside the database."""

    started: float = field(default_factory=perf_counter)
    queries: int = 0
    db_seconds: float = 0.0

    def app_ms(self) -> float:
        """Return the milliseconds since the request started."""
        return (perf_counter() - self.started) * 1000

    def db_ms(self) -> float:
        """Return the milliseconds spent executing SQL."""
        return self.db_seconds * 1000


_current: ContextVar[RequestTiming | None] = ContextVar("isp_admin_request_timing", default=None)


def current_timing() -> RequestTiming | None:
    """Return the running request's timing (None outside a request), for logs and metrics."""
    return _current.get()


def _statement_started(conn, _cursor, _statement, _parameters, _context, _executemany) -> None:
    if _current.get() is not None:
        # One slot per connection is enough: a connection runs one statement at a time, and a failed
        # statement's leftover start is overwritten by the next one.
        conn.info[_START_KEY] = perf_counter()


def _statement_finished(conn, _cursor, _statement, _parameters, _context, _executemany) -> None:
    timing = _current.get()
    started = conn.info.pop(_START_KEY, None)
    if timing is not None and started is not None:
        timing.queries += 1
        timing.db_seconds += perf_counter() - started


def _listen_to_every_engine() -> None:
    # Listening on the Engine class covers every app's engine (tests build many apps) with one listener pair.
    if not event.contains(Engine, "before_cursor_execute", _statement_started):
        event.listen(Engine, "before_cursor_execute", _statement_started)
        event.listen(Engine, "after_cursor_execute", _statement_finished)


def _start_request(_sender, **_extra) -> None:
    _current.set(RequestTiming())


def server_timing(app_ms: float, timing: RequestTiming) -> str:
    """Return the Server-Timing header value: the request's time, then the database's time and query count."""
    return f'app;dur={app_ms:.1f}, db;dur={timing.db_ms():.1f};desc="{timing.queries} queries"'


def _may_show_timing() -> bool:
    """Whether this response may carry timing: not to an anonymous client of the staff pages.

    An anonymous page (sign-in, password reset) would otherwise say how many queries it ran and how long it
    took, which differ between a known and an unknown email: a list of the staff's addresses for the asking.
    Every staff page (isp_admin.web) and every unmatched URL counts; probes, /metrics, static files and the API
    (whose anonymous answer is one 401 after one token lookup, whatever the token) keep their figures.
    """
    user = g.get("_login_user")
    if g.get("api_identity") is not None or (user is not None and user.is_authenticated):
        return True
    return _shown_to_anonymous(current_app._get_current_object(), request.endpoint)  # noqa: SLF001


STAFF_PAGES = "isp_admin.web"
_ANONYMOUS_TIMING = "isp_admin.timing.anonymous"  # app.extensions key: {endpoint: whether anonymous see timing}


def _shown_to_anonymous(app: Flask, endpoint: str | None) -> bool:
    # Decided once per endpoint: a view's module never changes while the app runs.
    decided = app.extensions[_ANONYMOUS_TIMING]
    shown = decided.get(endpoint)
    if shown is None:
        view = app.view_functions.get(endpoint or "")
        shown = decided[endpoint] = view is not None and not getattr(view, "__module__", "").startswith(STAFF_PAGES)
    return shown


def register_timing(app: Flask) -> None:
    """Time every request and report it in X-Response-Time and Server-Timing (not to anonymous pages)."""
    _listen_to_every_engine()
    app.extensions[_ANONYMOUS_TIMING] = {}
    # request_started fires before every before_request function (rate limits, auth), so they are timed too.
    request_started.connect(_start_request, app)

    @app.after_request
    def add_timing_headers(response):
        timing = _current.get()
        if timing is not None and _may_show_timing():
            app_ms = timing.app_ms()
            response.headers["X-Response-Time"] = f"{app_ms:.1f}ms"
            response.headers["Server-Timing"] = server_timing(app_ms, timing)
        return response

    @app.teardown_request
    def forget_timing(_exc=None) -> None:
        _current.set(None)

"""Domain exceptions, and the one place that maps them (and HTTP errors, and a lost database) to HTML or JSON."""
from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime

import psycopg
from flask import Flask, current_app, g, jsonify, make_response, render_template, request
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

from isp_admin.extensions import db

log = logging.getLogger(__name__)
DATABASE_RETRY_AFTER = 5  # seconds: pool_pre_ping reconnects on the first request after the database is back
DATABASE_UNAVAILABLE = "The service cannot reach its database right now. Please try again in a moment."
BUSY = "The service is too busy to answer right now. Please try again in a moment."


class AppError(Exception):
    """Base of the domain errors a service may raise."""

    status = 400
    code = "BAD_REQUEST"

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}


class Invalid(AppError):
    """Input breaks a validation rule; details map field names to messages."""

    status = 422
    code = "VALIDATION_ERROR"


class NotFound(AppError):
    """The record does not exist (or the caller may not know it exists)."""

    status = 404
    code = "NOT_FOUND"


class Conflict(AppError):
    """The write collides with existing state (a duplicate, a concurrent change)."""

    status = 409
    code = "CONFLICT"


class Forbidden(AppError):
    """The caller's role does not allow the action."""

    status = 403
    code = "PERMISSION_DENIED"


class BusinessRuleViolation(AppError):
    """The action is well-formed but a business rule forbids it."""

    status = 422
    code = "BUSINESS_RULE_VIOLATION"


HTTP_CODES = {
    400: "VALIDATION_ERROR",
    401: "AUTHENTICATION_REQUIRED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "VALIDATION_ERROR",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    503: "SERVICE_UNAVAILABLE",
}
PAGE_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Page not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request too large",
    422: "Cannot do that",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}


def wants_json() -> bool:
    """Answer in JSON for the API and for clients that prefer it over HTML."""
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


ERROR_PAGES = "isp_admin.error_pages"  # app.extensions key: (path prefix, template) of edges with their own layout


def use_error_page(app: Flask, path_prefix: str, template: str) -> None:
    """Render the HTML error pages under `path_prefix` with `template` (the portal's own layout, no staff menu)."""
    app.extensions.setdefault(ERROR_PAGES, []).append((path_prefix, template))


def _error_template() -> str:
    # By path, not blueprint: a URL under the prefix that matches no route has no blueprint, yet is the edge's.
    for prefix, template in current_app.extensions.get(ERROR_PAGES, ()):
        if request.path == prefix or request.path.startswith(prefix + "/"):
            return template
    return "errors/error.html"


def error_response(status: int, code: str, message: str, details: dict | None = None, headers=None):
    """Render one error as the JSON envelope or as the generic HTML error page."""
    if wants_json():
        body = {
            "success": False,
            "message": message,
            "error": {"code": code, "details": details or {}},
            "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        response = jsonify(body)
    else:
        html = render_template(
            _error_template(),
            status=status,
            title=PAGE_TITLES.get(status, "Error"),
            message=message,
            request_id=getattr(g, "request_id", None),
        )
        response = make_response(html)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    """Map domain errors, HTTP errors and unexpected exceptions to safe responses."""

    @app.errorhandler(AppError)
    def handle_app_error(exc: AppError):
        _rollback_quietly()
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.errorhandler(HTTPException)
    def handle_http_error(exc: HTTPException):
        status = exc.code or 500
        headers = {k: v for k, v in exc.get_headers() if k.lower() in ("allow", "retry-after", "www-authenticate")}
        if status == 429:
            message = "Too many requests. Please wait a moment and try again."
            retry = getattr(exc, "retry_after", None)
            if retry:
                headers["Retry-After"] = str(retry)
        elif status >= 500:
            message = "The server could not complete the request."
        else:
            message = exc.description or PAGE_TITLES.get(status, "Error")
        return error_response(status, HTTP_CODES.get(status, "ERROR"), message, headers=headers)

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        # Roll back so the next request on this connection starts clean; log the trace, show none of it.
        _rollback_quietly()
        log.exception("unhandled error (request id %s)", getattr(g, "request_id", "-"))
        return error_response(500, "INTERNAL_ERROR", "The server could not complete the request.")

    @app.errorhandler(sa_exc.IntegrityError)
    def handle_integrity_error(exc: sa_exc.IntegrityError):
        # A constraint or guard refused a second effect (two requests raced, and the other one won): the client
        # gets a clean conflict to reload and retry, never a 500. The constraint's name is logged, not shown.
        db.session.rollback()
        log.warning("write refused by a database constraint: %s", _reason(exc))
        return error_response(409, "CONFLICT", "This change collides with another one made at the same moment; "
                              "reload and try again.")

    outage = DatabaseOutage()
    with app.app_context():
        # Any connection handed out (pool_pre_ping checked it) after an outage is the sign the database is back.
        event.listen(db.engine, "engine_connect", lambda *_: outage.ended())

    @app.errorhandler(sa_exc.OperationalError)
    @app.errorhandler(sa_exc.InterfaceError)
    @app.errorhandler(sa_exc.TimeoutError)
    @app.errorhandler(psycopg.OperationalError)
    def handle_database_unavailable(exc: Exception):
        if not database_unreachable(exc):
            return handle_unexpected(exc)  # a deadlock or a timed-out statement is a bug to trace, not an outage
        with contextlib.suppress(Exception):  # the connection is gone; the pool discards it on its own
            db.session.rollback()
        if isinstance(exc, sa_exc.TimeoutError):
            outage.pool_exhausted(exc)
            message = BUSY
        else:
            outage.began(exc)
            message = DATABASE_UNAVAILABLE
        # The page's navigation would load the signed-in user from the database that just failed.
        g._login_user = app.login_manager.anonymous_user()
        return error_response(503, "SERVICE_UNAVAILABLE", message, headers={"Retry-After": str(DATABASE_RETRY_AFTER)})


def register_session_teardown(app: Flask) -> None:
    """Remove the request's database session without ever letting a failure replace the response.

    Flask-SQLAlchemy's own teardown calls session.remove(), whose rollback raises on a dead connection; raised in
    teardown, that error escapes Flask and gunicorn answers its own HTML 500 in place of the real response (a
    committed 201, or the 503 envelope). Register after db.init_app so this runs first (teardowns run in reverse);
    Flask-SQLAlchemy's then finds no session left to remove.
    """

    @app.teardown_appcontext
    def remove_session_safely(_exc: BaseException | None) -> None:
        try:
            db.session.remove()
        except Exception:  # noqa: BLE001  (the response is made; the pool discards the broken connection)
            log.warning("could not close the request's database session", exc_info=True)
            with contextlib.suppress(Exception):
                db.session.invalidate()  # never hand that connection out again
            db.session.registry.clear()


def _rollback_quietly() -> None:
    # An error handler must answer even when the connection is dead: a rollback raising here would escape Flask.
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001
        log.warning("rollback failed while answering an error", exc_info=True)


def database_unreachable(exc: Exception) -> bool:
    """Whether `exc` means the database cannot be reached (down, restarting, pool drained), not a bad query."""
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.DisconnectionError):
        return True
    if getattr(exc, "connection_invalidated", False):
        return True
    original = getattr(exc, "orig", exc)
    if not isinstance(original, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    # No SQLSTATE: the connection failed or dropped. Class 08 is a connection exception; 57P01-57P03 are the
    # server shutting down, crashing or still starting.
    state = getattr(original, "sqlstate", None)
    return state is None or state.startswith("08") or state in ("57P01", "57P02", "57P03")


class DatabaseOutage:
    """Log an outage once when it begins (again each minute while it lasts) and once when it ends."""

    REPEAT_SECONDS = 60.0

    def __init__(self):
        self.since: float | None = None
        self.last_logged = 0.0
        self.last_pool_warning = -self.REPEAT_SECONDS
        self.failures = 0

    def began(self, exc: Exception) -> None:
        """Count a request refused for want of the database; log the first, then one a minute."""
        now = time.monotonic()
        self.failures += 1
        if self.since is None:
            self.since, self.last_logged = now, now
            log.error("database unreachable; answering 503 until it is back: %s", _reason(exc))
        elif now - self.last_logged >= self.REPEAT_SECONDS:
            self.last_logged = now
            log.error("database still unreachable after %.0f s (%d requests refused): %s", now - self.since,
                      self.failures, _reason(exc))

    def pool_exhausted(self, exc: Exception) -> None:
        """Log, at most once a minute, a request refused because every pooled connection stayed busy."""
        now = time.monotonic()
        if now - self.last_pool_warning >= self.REPEAT_SECONDS:
            self.last_pool_warning = now
            log.error("database connection pool exhausted; answering 503: %s", _reason(exc))

    def ended(self) -> None:
        """Log the end of an outage, if there was one."""
        if self.since is not None:
            log.warning("database reachable again after %.1f s (%d requests refused)",
                        time.monotonic() - self.since, self.failures)
            self.since, self.failures = None, 0


def _reason(exc: Exception) -> str:
    # The driver's first line says why (refused, timed out, terminated); SQLAlchemy's wrapping adds the SQL text.
    original = getattr(exc, "orig", None) or exc
    return f"{type(original).__name__}: {str(original).strip().splitlines()[0][:200] if str(original) else ''}"

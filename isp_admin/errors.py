"""Domain exceptions, and the one place that maps them (and HTTP errors) to HTML pages or JSON."""
from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Flask, g, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException

from isp_admin.extensions import db

log = logging.getLogger(__name__)


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
            "errors/error.html",
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
        db.session.rollback()
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
        db.session.rollback()
        log.exception("unhandled error (request id %s)", getattr(g, "request_id", "-"))
        return error_response(500, "INTERNAL_ERROR", "The server could not complete the request.")

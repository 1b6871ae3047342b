"""Structured logs (structlog): JSON lines in production, one line per request, secrets never written.

Every record — ours, Flask's, gunicorn's, RQ's — goes through the same processors, so each carries the request id
(bound in a context variable for the request, and for a job from the request that queued it) and passes the
redaction step: values under keys that name passwords, tokens, secrets, cookies or card data are replaced, and
bearer tokens or API secrets inside messages are masked.
"""
from __future__ import annotations

import logging
import re
import sys

from flask import Flask, g, request, request_finished
from sqlalchemy import inspect as sa_inspect

from isp_admin.observability.timing import current_timing


def _import_structlog_without_rich():
    """Import structlog with Rich hidden, unless something already loaded Rich.

    structlog imports Rich (and through it Pygments: ~90 modules, ~5 MB per process) whenever Rich is installed,
    for pretty tracebacks; it is installed for Flask-Limiter's CLI. Our chain turns exceptions into plain text
    (format_exc_info) before either renderer runs, so Rich would never draw anything here. A None entry in
    sys.modules makes `import rich` fail for the moment, and structlog takes its no-Rich path.
    """
    if "structlog" in sys.modules or "rich" in sys.modules:
        import structlog

        return structlog
    sys.modules["rich"] = None
    try:
        import structlog
    finally:
        del sys.modules["rich"]
    return structlog


structlog = _import_structlog_without_rich()

SENSITIVE_KEY = re.compile(r"pass(word)?|secret|token|authori[sz]ation|cookie|session|card|cvv|cvc|iban|pan\b|"
                           r"api[_-]?key|signature", re.IGNORECASE)
SECRET_IN_TEXT = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"ispa_[A-Za-z0-9_-]{8,}"), "ispa_[redacted]"),
    (re.compile(r"(?i)((?:password|passwd|secret|token)\s*[=:]\s*)\S+"), r"\1[redacted]"),
    (re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), "[redacted card number]"),
]
REDACTED = "[redacted]"
# Matches wherever any SECRET_IN_TEXT pattern could (a superset): a text it misses has nothing to redact, so a
# request line's dozen plain fields cost one search each rather than four substitutions.
_MAY_HOLD_SECRET = re.compile(r"(?i)bearer|ispa_|passw(?:or)?d|secret|token|\d(?:[ -]?\d){12}")


def _scrub_text(text: str) -> str:
    if not _MAY_HOLD_SECRET.search(text):
        return text
    for pattern, replacement in SECRET_IN_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _scrub(value, key: str = ""):
    if key and SENSITIVE_KEY.search(key) and not key.endswith("_id"):
        return REDACTED
    if isinstance(value, dict):
        return {k: _scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, str):
        return _scrub_text(value)
    return value


def redact(_logger, _method, event_dict: dict) -> dict:
    """Replace secrets in a log record: by key name anywhere in it, and by shape inside text."""
    return {key: (value if key in ("timestamp", "level", "logger") else _scrub(value, key))
            for key, value in event_dict.items()}


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever sys.stderr is now (test capture swaps it; production never)."""

    @property
    def stream(self):
        """The current standard error."""
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    """Route structlog and the standard library's logging through one JSON (or console) renderer."""
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        structlog.processors.format_exc_info,
        redact,
    ]
    renderer = structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = _StderrHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_isp_admin", False)]:
        root.removeHandler(old)
    handler._isp_admin = True  # so a second app in the same process replaces it instead of doubling lines
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("alembic.runtime.plugins",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # our request line replaces werkzeug's


def current_request_id() -> str | None:
    """Return the request id bound for this request or job, for handing on to the jobs it queues."""
    return structlog.contextvars.get_contextvars().get("request_id")


def _who() -> dict:
    identity = g.get("api_identity")
    if identity is not None:
        return identity
    user = g.get("_login_user")  # only a user this request already loaded; never a query just to log
    if user is not None and getattr(user, "is_authenticated", False):
        identity = sa_inspect(user).identity  # read from the identity map: no refresh of an expired row
        return {"user_id": identity[0]} if identity else {}
    return {}


# Probes (every few seconds from each balancer and orchestrator) and static files: a line each would bury the rest.
UNLOGGED_ENDPOINTS = frozenset({"health.health", "health.live", "static"})


def register_request_logging(app: Flask) -> None:
    """Bind the request id for every log line of a request, and write one line per request when it ends."""
    access_log = structlog.get_logger("isp_admin.request")
    slow_ms = app.config.get("SLOW_REQUEST_MS", 1000)

    @app.before_request
    def bind_request_id():
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=g.get("request_id"))

    request_logger = logging.getLogger("isp_admin.request")

    def log_request(_sender, response, **_extra):
        # request_finished fires after every after_request hook, so the figures are the request's final ones.
        timing = current_timing()
        duration = round(timing.app_ms(), 1) if timing else None
        slow = duration is not None and duration > slow_ms
        if not slow and (request.endpoint in UNLOGGED_ENDPOINTS or not request_logger.isEnabledFor(logging.INFO)):
            return  # a probe, a static file, or LOG_LEVEL=WARNING: no line to write, so no fields to gather
        fields = {"method": request.method, "path": request.path, "status": response.status_code,
                  "duration_ms": duration, "queries": timing.queries if timing else None,
                  "db_ms": round(timing.db_ms(), 1) if timing else None, "endpoint": request.endpoint,
                  "remote_addr": request.remote_addr, **_who()}
        if slow:
            access_log.warning("slow request", slow_ms=slow_ms, **fields)
        else:
            access_log.info("request", **fields)

    request_finished.connect(log_request, app, weak=False)

    @app.teardown_request
    def unbind(_exc):
        structlog.contextvars.clear_contextvars()

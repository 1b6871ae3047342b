"""Response hardening: Talisman's headers and cookie flags, CORP/COOP, no-store for signed-in users, API CORS.

The policy aims at the HTTP Observatory's top grade (tests/test_observatory.py scores every route by its rules):
a CSP that denies by default and names each kind of resource the pages load (all local), frame-ancestors and
form-action set, HSTS for a year in production, nosniff, X-Frame-Options, a private Referrer-Policy, and
Cross-Origin-Resource-Policy: same-origin.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, current_app, g, request

from isp_admin.config import ConfigError
from isp_admin.extensions import talisman

ONE_YEAR = 31536000

# Deny by default; every source is this origin. data: images are Bootstrap's and Swagger UI's CSS icons (images
# cannot run script, so the Observatory allows data: there). No 'unsafe-*' anywhere: pages carry no inline code.
CONTENT_SECURITY_POLICY = {
    "default-src": "'none'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "font-src": "'self'",
    "connect-src": "'self'",  # the job-progress poller and Swagger UI fetch from this origin only
    "manifest-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

CORS_PATH_PREFIX = "/api/"
CORS_ALLOW_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_ALLOW_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "If-None-Match", "Accept-Version")
CORS_EXPOSE_HEADERS = ("X-API-Version", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
                       "Retry-After", "ETag", "Location", "Idempotent-Replayed", "X-Request-ID")
CORS_MAX_AGE = 600


def register_security_headers(app: Flask) -> None:
    """Send the hardened headers on every response and keep signed-in users' responses out of caches."""
    production = app.config["PRODUCTION"]

    # Registered before Talisman's hook so that it runs after it (Flask runs after-request hooks in reverse) and
    # widens the policy Talisman wrote, for the one response that asked.
    @app.after_request
    def widen_form_action(response):
        extra = g.get("form_action_origins")
        policy = response.headers.get("Content-Security-Policy")
        if extra and policy:
            response.headers["Content-Security-Policy"] = policy.replace(
                "form-action 'self'", "form-action 'self' " + " ".join(extra), 1)
        return response

    talisman.init_app(
        app,
        force_https=production,
        strict_transport_security=production,
        strict_transport_security_max_age=ONE_YEAR,
        strict_transport_security_include_subdomains=True,
        session_cookie_secure=production,
        frame_options="DENY",
        referrer_policy="strict-origin-when-cross-origin",
        content_security_policy=CONTENT_SECURITY_POLICY,
    )

    @app.after_request
    def harden_response(response):
        # Nothing here is meant to be embedded or read by another site; CORS-mode API reads are unaffected.
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        # A view that chose its own caching keeps it: the API's conditional GETs (private, no-cache + ETag),
        # static files, /metrics. Anything else shown to a signed-in user must not be stored by any cache.
        if "Cache-Control" not in response.headers and _signed_in():
            response.headers["Cache-Control"] = "no-store"
        return response


def allow_form_action(origins) -> None:
    """Let this page's forms also end at `origins`: a payment provider's hosted page, reached by a redirect after
    the post (browsers apply form-action to every redirect of a form's navigation)."""
    g.form_action_origins = tuple(origin for origin in origins if _is_origin(origin))


def _is_origin(value: str) -> bool:
    # Only scheme://host[:port] goes into the header: nothing that could end the directive or add another.
    parts = urlsplit(value)
    return parts.scheme in ("https", "http") and bool(parts.netloc) and value == f"{parts.scheme}://{parts.netloc}" \
        and not any(c in value for c in " ;,'\"")


def _signed_in() -> bool:
    # Only a user this request already loaded (every page does, through its access check): loading one here
    # would turn a response that needs no database (/health/live/, a 503 page) into a 500 while PostgreSQL is down.
    user = g.get("_login_user")
    return g.get("api_token") is not None or bool(user is not None and user.is_authenticated)


def allowed_origins(configured: list[str]) -> frozenset[str]:
    """Return the configured CORS origins, normalised; refuse anything but exact scheme://host[:port] origins."""
    origins = set()
    for origin in configured:
        parts = urlsplit(origin.strip())
        try:
            port = parts.port
        except ValueError:  # not a number, or out of range
            port = -1
        exact = (parts.scheme in ("http", "https") and parts.hostname and "*" not in origin and port != -1
                 and not (parts.path.strip("/") or parts.query or parts.fragment or parts.username))
        if not exact:
            raise ConfigError(f"CORS_ALLOWED_ORIGINS takes exact origins like https://app.example.com, "
                              f"not {origin!r}")
        shown_port = f":{port}" if port not in (None, {"http": 80, "https": 443}[parts.scheme]) else ""
        origins.add(f"{parts.scheme}://{parts.hostname}{shown_port}")  # as browsers send it: lower case, no :443
    return frozenset(origins)


def register_cors(app: Flask) -> None:
    """Let the listed origins call the API from a browser (tokens, never cookies); off when none are listed.

    Registered before the rate limiter: a preflight carries no credentials and is answered here at once, so it
    never spends the client's request budget.
    """
    origins = allowed_origins(app.config.get("CORS_ALLOWED_ORIGINS") or [])
    if not origins:
        return
    app.extensions["isp_admin.cors_origins"] = origins

    @app.before_request
    def answer_preflight():
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            origin = _allowed_origin()
            if origin:
                response = current_app.response_class(status=204)
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Allow-Methods"] = ", ".join(CORS_ALLOW_METHODS)
                response.headers["Access-Control-Allow-Headers"] = ", ".join(CORS_ALLOW_HEADERS)
                response.headers["Access-Control-Max-Age"] = str(CORS_MAX_AGE)
                return response
        return None

    @app.after_request
    def grant_cross_origin_read(response):
        if request.path.startswith(CORS_PATH_PREFIX):
            response.vary.add("Origin")  # the answer differs by Origin: shared caches must keep them apart
            origin = _allowed_origin()
            if origin and "Access-Control-Allow-Origin" not in response.headers:
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Expose-Headers"] = ", ".join(CORS_EXPOSE_HEADERS)
        return response


def _allowed_origin() -> str | None:
    """Return the request's Origin when it is an API request from an allowed origin, else None."""
    if not request.path.startswith(CORS_PATH_PREFIX):
        return None
    origin = request.headers.get("Origin", "").strip().lower()
    return origin if origin in current_app.extensions["isp_admin.cors_origins"] else None

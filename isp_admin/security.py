"""Response hardening: Talisman's headers and cookie flags, CORP/COOP, no-store for signed-in users, API CORS.

The policy aims at the HTTP Observatory's top grade (tests/test_observatory.py scores every route by its rules):
a CSP that denies by default and names each kind of resource the pages load (all local), frame-ancestors and
form-action set, HSTS for a year in production, nosniff, X-Frame-Options, a private Referrer-Policy, and
Cross-Origin-Resource-Policy: same-origin.
"""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, current_app, g, redirect, request, session

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


def talisman_options(production: bool) -> dict:
    """Return the options Talisman is set up with (and the precomputed headers are built from)."""
    return {
        "force_https": production,
        "strict_transport_security": production,
        "strict_transport_security_max_age": ONE_YEAR,
        "strict_transport_security_include_subdomains": True,
        "session_cookie_secure": production,
        "frame_options": "DENY",
        "referrer_policy": "strict-origin-when-cross-origin",
        "content_security_policy": CONTENT_SECURITY_POLICY,
    }


# Talisman's settings the headers are built from, read when the app registers them: the one Talisman object serves
# every app of a process (tests build many), and each app keeps the settings it was set up with.
TALISMAN_SETTINGS = ("force_https", "frame_options", "frame_options_allow_from", "content_security_policy",
                     "content_security_policy_nonce_in", "permissions_policy", "document_policy", "feature_policy",
                     "x_xss_protection", "x_content_type_options", "force_file_save",
                     "content_security_policy_report_uri", "content_security_policy_report_only",
                     "strict_transport_security", "strict_transport_security_max_age",
                     "strict_transport_security_include_subdomains", "strict_transport_security_preload",
                     "referrer_policy")
VIEW_OPTIONS = ("force_https", "frame_options", "frame_options_allow_from", "content_security_policy",
                "content_security_policy_nonce_in", "permissions_policy", "document_policy", "feature_policy")


class PrecomputedHeaders:
    """Talisman's response headers and redirect to HTTPS, with every value worked out once per endpoint.

    Talisman re-reads the view's options and re-joins its policies on every request (the busiest functions of
    /health/ under load). Its headers depend only on the view's options (a per-view `@talisman(...)`) and, for
    HSTS, on whether the request came over HTTPS, so they are built once per endpoint from Talisman's settings
    with its own formatting, in its order. Talisman still owns the configuration (cookie flags, the `csp_nonce`
    template global, per-view options); only its three per-request hooks are replaced.
    """

    def __init__(self, app: Flask, talisman_):
        self.app = app
        self.settings = {name: getattr(talisman_, name) for name in TALISMAN_SETTINGS}
        self.hsts = bool(self.settings["strict_transport_security"])
        self._format_structured = talisman_._parse_structured_header_policy  # noqa: SLF001  (its format)
        self._by_endpoint: dict[str | None, tuple] = {}

    def options(self, endpoint: str | None) -> tuple:
        """Return (force_https, headers for HTTP, headers for HTTPS) of `endpoint`, built on first use."""
        found = self._by_endpoint.get(endpoint)
        if found is None:
            found = self._by_endpoint[endpoint] = self._build(endpoint)
        return found

    def _build(self, endpoint: str | None) -> tuple:
        t = self.settings
        view = self.app.view_functions.get(endpoint)
        local = {**{name: t[name] for name in VIEW_OPTIONS}, **getattr(view, "talisman_view_options", {})}
        if local["content_security_policy_nonce_in"] or local["feature_policy"]:
            # A nonce differs per request, and Talisman formats feature policies per request: neither is used here.
            raise RuntimeError("precomputed security headers cannot carry a CSP nonce or a feature policy")
        headers = []
        for name, policy in (("Permissions-Policy", local["permissions_policy"]),
                             ("Document-Policy", local["document_policy"])):
            if policy:
                headers.append((name, self._format_structured(policy)))
        if local["frame_options"]:
            frame = local["frame_options"]
            headers.append(("X-Frame-Options", f"{frame} {local['frame_options_allow_from']}"
                            if frame == "ALLOW-FROM" else frame))
        if t["x_xss_protection"]:
            headers.append(("X-XSS-Protection", "1; mode=block"))
        if t["x_content_type_options"]:
            headers.append(("X-Content-Type-Options", "nosniff"))
        if t["force_file_save"]:
            headers.append(("X-Download-Options", "noopen"))
        if local["content_security_policy"]:
            headers.append(_csp_header(t, local["content_security_policy"]))
        plain = (*headers, ("Referrer-Policy", t["referrer_policy"]))
        secure = plain
        if self.hsts:
            hsts = f"max-age={t['strict_transport_security_max_age']}"
            hsts += "; includeSubDomains" if t["strict_transport_security_include_subdomains"] else ""
            hsts += "; preload" if t["strict_transport_security_preload"] else ""
            secure = (*headers, ("Strict-Transport-Security", hsts), ("Referrer-Policy", t["referrer_policy"]))
        return bool(local["force_https"]), plain, secure


def _csp_header(t: dict, policy) -> tuple[str, str]:
    # Talisman's own formatting (_parse_policy without a nonce): "directive sources" joined by "; ".
    if isinstance(policy, str):
        parsed = {}
        for part in policy.split(";"):
            words = part.strip().split(" ")
            parsed[words[0]] = " ".join(words[1:])
        policy = parsed
    value = "; ".join(f"{section} {content if isinstance(content, str) else ' '.join(content)}"
                      for section, content in policy.items())
    if t["content_security_policy_report_uri"] and "report-uri" not in value:
        value += "; report-uri " + t["content_security_policy_report_uri"]
    report_only = t["content_security_policy_report_only"]
    return ("Content-Security-Policy-Report-Only" if report_only else "Content-Security-Policy"), value


# Every header Talisman may set (lower case): a view's own value for one is overwritten, as Talisman does.
TALISMAN_HEADERS = frozenset({"permissions-policy", "document-policy", "x-frame-options", "x-xss-protection",
                              "x-content-type-options", "x-download-options", "content-security-policy",
                              "content-security-policy-report-only", "strict-transport-security",
                              "referrer-policy"})


def _over_https() -> bool:
    # Talisman's test, kept as it is: the scheme ProxyFix set, or the proxy's header itself.
    return request.is_secure or request.headers.get("X-Forwarded-Proto", "http") == "https"


def _replace_talisman_hooks(app: Flask) -> None:
    before, after = app.before_request_funcs.get(None, []), app.after_request_funcs.get(None, [])
    kept_before = [hook for hook in before if not (hasattr(hook, "__self__") and hook.__self__ is talisman)]
    kept_after = [hook for hook in after if not (hasattr(hook, "__self__") and hook.__self__ is talisman)]
    if len(before) - len(kept_before) != 2 or len(after) - len(kept_after) != 1:
        # A Flask-Talisman release that hooks in differently must not leave its headers set twice, or not at all.
        raise RuntimeError("Flask-Talisman's request hooks were not found; cannot replace them")
    app.before_request_funcs[None], app.after_request_funcs[None] = kept_before, kept_after


def register_security_headers(app: Flask) -> None:
    """Send the hardened headers on every response and keep signed-in users' responses out of caches."""
    talisman.init_app(app, **talisman_options(app.config["PRODUCTION"]))
    _replace_talisman_hooks(app)
    precomputed = PrecomputedHeaders(app, talisman)

    @app.before_request
    def redirect_to_https():
        # Talisman's redirect (debug mode, HTTPS, or a proxy's X-Forwarded-Proto: https are let through). Its
        # per-request SESSION_COOKIE_SECURE=True is left out: the config sets it from the same production flag.
        if precomputed.options(request.endpoint)[0] and not (app.debug or _over_https()):
            url = request.url
            if url.startswith("http://"):
                return redirect(url.replace("http://", "https://", 1), code=302)
        return None

    @app.after_request
    def set_security_headers(response):
        headers = response.headers
        present = {name.lower() for name, _value in headers.items()}  # one pass; Headers.set scans per name
        # Nothing here is meant to be embedded or read by another site; CORS-mode API reads are unaffected.
        for name in ("Cross-Origin-Resource-Policy", "Cross-Origin-Opener-Policy"):
            if name.lower() not in present:
                headers.add(name, "same-origin")
        # A view that chose its own caching keeps it: the API's conditional GETs (private, no-cache + ETag),
        # static files, /metrics. Anything else shown to a signed-in user must not be stored by any cache.
        if "cache-control" not in present and _signed_in():
            headers.add("Cache-Control", "no-store")
        _force, plain, secure = precomputed.options(request.endpoint)
        chosen = secure if precomputed.hsts and _over_https() else plain
        extra = g.get("form_action_origins")
        if extra:
            # The one response that asked (the pay page) lets its forms end at a provider's hosted page.
            chosen = [(name, value.replace("form-action 'self'", "form-action 'self' " + " ".join(extra), 1)
                       if name == "Content-Security-Policy" else value) for name, value in chosen]
        if present.isdisjoint(TALISMAN_HEADERS):
            headers.extend(chosen)
        else:  # a view set one of them itself: Talisman overwrote it in place, and so does this
            for name, value in chosen:
                headers[name] = value
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
    if g.get("api_token") is not None:
        return True
    user = g.get("_login_user")
    if user is not None:
        return bool(user.is_authenticated)
    # Nothing loaded a user (a probe, or a route the rate limiter skips): a session that names one is enough to
    # keep the answer out of shared caches, and costs no query.
    return "_user_id" in session


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

"""One session cookie for staff pages and another for the portal, never interchangeable.

Flask has one session interface per app; this one picks the cookie by path. Under /portal/ it reads and writes
PORTAL_SESSION_COOKIE_NAME, signed with a salt of its own, so a staff cookie replayed as a portal cookie (or the
reverse) fails its signature, and signing into one never signs into the other. Elsewhere it is Flask's own.
"""
from __future__ import annotations

from datetime import UTC, datetime

from flask import has_request_context, request
from flask.sessions import SecureCookieSessionInterface, SessionInterface

PORTAL_PREFIX = "/portal"


def is_portal_request() -> bool:
    """Whether the current request is the portal's (its path is under /portal)."""
    return has_request_context() and (request.path == PORTAL_PREFIX or request.path.startswith(PORTAL_PREFIX + "/"))


class _SignedCookie(SecureCookieSessionInterface):
    """Flask's signed-cookie session, without its per-request work for a request that carries no cookie.

    Flask builds a signing serializer on every request, cookie or not, and works out every cookie setting before
    it finds an untouched empty session has nothing to save: most of a probe's or an API call's session cost.
    """

    _serializer: tuple = (None, None)  # (the keys it signs with, the serializer)

    def get_signing_serializer(self, app):
        """Flask's serializer, built again only when the keys change."""
        keys = (app.secret_key, tuple(app.config["SECRET_KEY_FALLBACKS"] or ()))
        if self._serializer[0] != keys:
            self._serializer = (keys, super().get_signing_serializer(app))
        return self._serializer[1]

    def open_session(self, app, request):
        """Open the session; with no cookie, a new empty one at once (None without a secret key, as Flask)."""
        # No Cookie header at all (probes, API scripts): nothing to parse, let alone verify.
        if app.secret_key and ("HTTP_COOKIE" not in request.environ
                               or not request.cookies.get(self.get_cookie_name(app))):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app, session, response) -> None:
        """Save the session; an empty, unchanged one only adds Vary: Cookie when it was read, as in Flask."""
        if session or session.modified:
            super().save_session(app, session, response)
        elif session.accessed:
            if "Vary" in response.headers:
                response.vary.add("Cookie")
            else:  # what vary.add writes when there is no Vary yet, without parsing and re-serialising a header set
                response.headers.add("Vary", "Cookie")


class _PortalCookie(_SignedCookie):
    """Flask's signed-cookie session under the portal's cookie name, salt and lifetime."""

    salt = "isp-admin-portal-session"

    def get_cookie_name(self, app) -> str:
        """The portal's cookie name."""
        return app.config["PORTAL_SESSION_COOKIE_NAME"]

    def get_expiration_time(self, app, session):
        """Permanent portal sessions last PORTAL_SESSION_LIFETIME."""
        if session.permanent:
            return datetime.now(UTC) + app.config["PORTAL_SESSION_LIFETIME"]
        return None


class PathSessionInterface(SessionInterface):
    """The staff cookie's interface for staff paths, the portal cookie's under /portal (each request picks one)."""

    def __init__(self):
        self.staff, self.portal = _SignedCookie(), _PortalCookie()

    def _pick(self) -> SessionInterface:
        return self.portal if is_portal_request() else self.staff

    def open_session(self, app, request):
        """Open the session of the cookie this path uses."""
        return self._pick().open_session(app, request)

    def save_session(self, app, session, response) -> None:
        """Save the session into the cookie this path uses."""
        self._pick().save_session(app, session, response)

    def make_null_session(self, app):
        """A null session (no secret key), as Flask makes it."""
        return self._pick().make_null_session(app)

    def is_null_session(self, obj) -> bool:
        """Whether `obj` is a null session."""
        return self._pick().is_null_session(obj)


def install(app) -> None:
    """Use the path-aware session interface on `app`."""
    app.session_interface = PathSessionInterface()

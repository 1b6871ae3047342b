"""The portal's own sign-in state: session["portal"] = "<account id>:<session version>" in the portal cookie.

Nothing here reads Flask-Login or the staff session: a staff user is a stranger to the portal, and a customer a
stranger to staff pages (their cookies differ by name and salt, see session.py).
"""
from __future__ import annotations

from functools import wraps
from urllib.parse import urlsplit

from flask import g, redirect, request, session, url_for
from flask_login import AnonymousUserMixin

from isp_admin.services.platform.audit import Actor, acting_as
from isp_admin.services.portal import accounts as portal_accounts

SESSION_KEY = "portal"


def sign_in(account) -> None:
    """Start a fresh portal session for `account` (nothing from before survives: no fixation)."""
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = f"{account.id}:{account.session_version}"


def sign_out() -> None:
    """End this portal session."""
    session.clear()


def signed_in():
    """The SignedIn (account, customer) of this request's portal session, or None."""
    raw = session.get(SESSION_KEY)
    try:
        account_id, version = (int(part) for part in str(raw).split(":", 1))
    except (TypeError, ValueError):
        return None
    return portal_accounts.session_account(account_id, version)


def portal_actor(customer=None) -> Actor:
    """Who the audit trail names for portal writes: the signed-in customer, or an anonymous visitor."""
    if customer is None:
        return Actor("system", None, "portal:anonymous", request.remote_addr)
    return Actor("customer", customer.id, f"portal:{customer.account_number}", request.remote_addr)


def safe_next(target: str | None) -> str:
    """A relative URL under /portal to go back to after sign-in, else the dashboard (no open redirect)."""
    if target and (target == "/portal" or target.startswith("/portal/")) and "\\" not in target \
            and not target.startswith("//") and not urlsplit(target).netloc and ".." not in target:
        return target
    return url_for("portal.dashboard")


def portal_login_required(view):
    """Load g.portal_account and g.customer, or send the visitor to the portal's sign-in and back."""

    @wraps(view)
    def guarded(*args, **kwargs):
        current = signed_in()
        if current is None:
            session.pop(SESSION_KEY, None)
            back = request.full_path.rstrip("?") if request.method == "GET" else None
            return redirect(url_for("portal.login", next=back))
        g.portal_account, g.customer = current.account, current.customer
        with acting_as(portal_actor(current.customer)):
            return view(*args, **kwargs)

    return guarded


def keep_staff_out() -> None:
    """Make Flask-Login see nobody on portal pages, so a staff remember-me cookie signs no one in here."""
    g._login_user = AnonymousUserMixin()  # noqa: SLF001  (Flask-Login's per-request slot for current_user)


STAFF_KEYS = ("_user_id", "_fresh", "_id", "_remember", "_remember_seconds")


def no_store(response):
    """Portal pages carry a customer's data: never cache them; and keep staff sign-in keys out of the portal cookie."""
    response.headers["Cache-Control"] = "no-store"
    for key in STAFF_KEYS:  # Flask-Login may have put them there from a staff remember-me cookie
        session.pop(key, None)
    return response

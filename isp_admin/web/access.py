"""The one decorator that guards every view, and the table of which role may do what."""
from __future__ import annotations

from functools import wraps

from flask import abort
from flask_login import current_user

from isp_admin.extensions import login_manager

ALL_ROLES = frozenset({"admin", "billing", "support", "readonly"})
PERMISSIONS: dict[str, frozenset[str]] = {
    "view": ALL_ROLES,                                    # read any page of the panel
    "account": ALL_ROLES,                                 # one's own password
    "customers.edit": frozenset({"admin", "billing", "support"}),
    "subscriptions.edit": frozenset({"admin", "billing", "support"}),
    "plans.edit": frozenset({"admin", "billing"}),
    "billing.edit": frozenset({"admin", "billing"}),      # invoices, payments, credit notes, notifications
    "billing.run": frozenset({"admin", "billing"}),       # start the nightly steps by hand
    "users.manage": frozenset({"admin"}),
}
PUBLIC = "public"


def can(permission: str, user=None) -> bool:
    """Return whether the (current) user holds `permission`."""
    user = user or current_user
    return bool(user and user.is_authenticated and user.role in PERMISSIONS[permission])


def access(permission: str):
    """Guard a view: PUBLIC, or signed in with a role that holds `permission` (else 403)."""
    if permission != PUBLIC and permission not in PERMISSIONS:
        raise ValueError(f"unknown permission {permission!r}")

    def decorate(view):
        @wraps(view)
        def guarded(*args, **kwargs):
            if permission != PUBLIC:
                if not current_user.is_authenticated:
                    return login_manager.unauthorized()
                if not can(permission):
                    abort(403, "Your role does not allow this.")
            return view(*args, **kwargs)

        guarded.access_permission = permission
        return guarded

    return decorate

"""The one decorator that guards every view (the table of who may do what is isp_admin.permissions).

It lives outside isp_admin.web because views of other edges use it too (the API docs, health probes, /metrics),
and edges must not import one another.
"""
from __future__ import annotations

from functools import wraps

from flask import abort
from flask_login import current_user

from isp_admin.extensions import login_manager
from isp_admin.permissions import PERMISSIONS

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

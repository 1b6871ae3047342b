"""Load the signed-in user; a session is valid only while its session version is current."""
from __future__ import annotations

from typing import TYPE_CHECKING

from flask import has_request_context, request
from flask_login import LoginManager, current_user

from isp_admin.services.identity import users as user_service
from isp_admin.services.platform.audit import SYSTEM, Actor, set_actor_provider

if TYPE_CHECKING:
    from isp_admin.models import User


def _load_user(session_id: str) -> User | None:
    try:
        user_id, version = (int(part) for part in session_id.split(":", 1))
    except (ValueError, AttributeError):
        return None
    return user_service.session_user(user_id, version)


def _web_actor() -> Actor:
    # The provider set by a request outlives it in the same context (the test client, a shell): writes made
    # after the request are the system's, not a stale user's, and must not fail for want of a request.
    if not has_request_context():
        return SYSTEM
    if current_user and current_user.is_authenticated:
        return Actor("user", current_user.id, current_user.email, request.remote_addr)
    return Actor("system", None, "anonymous", request.remote_addr)


def register_user_loader(manager: LoginManager) -> None:
    """Configure Flask-Login: loader, login view, and session protection."""
    manager.user_loader(_load_user)
    manager.login_view = "auth.login"
    manager.login_message = "Please sign in to continue."
    manager.login_message_category = "info"
    manager.session_protection = "basic"


def install_actor(app) -> None:
    """Attribute every write in a request to the signed-in user and their address."""

    @app.before_request
    def set_request_actor() -> None:
        set_actor_provider(_web_actor)

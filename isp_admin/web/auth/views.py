"""Sign in, sign out, password reset and password change."""
from __future__ import annotations

import math
from functools import partial
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import COOKIE_NAME, current_user, login_user, logout_user

from isp_admin.errors import Invalid
from isp_admin.extensions import limiter
from isp_admin.ratelimit import client_ip_key, login_limit, password_reset_limit
from isp_admin.services.identity import users as user_service
from isp_admin.services.messaging.mail import send_email
from isp_admin.services.platform.audit import Actor, acting_as, current_actor
from isp_admin.web.access import PUBLIC, access
from isp_admin.web.auth.forms import ChangePasswordForm, ForgotPasswordForm, LoginForm, ResetPasswordForm
from isp_admin.web.unit_of_work import REFUSED, commit_once, perform

bp = Blueprint("auth", __name__)
FAILED = "Invalid email or password."
# Mailed links in development and tests when PUBLIC_URL is unset: fixed, never taken from the request.
DEVELOPMENT_PUBLIC_URL = "http://localhost:5000"


def _safe_next(target: str | None) -> str:
    # Only local paths: an open redirect after sign-in is a phishing tool.
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("dashboard.index")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(login_limit, key_func=client_ip_key, methods=["POST"])
@access(PUBLIC)
def login():
    """Sign a staff user in; every failure gets the same message."""
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm()
    if form.validate_on_submit():
        # A refused sign-in is an answer (None), not an error, so it commits too: the failure count and any wait
        # it wrote must be kept, or guessing passwords would cost nothing.
        result = commit_once(user_service.sign_in, form.email.data, form.password.data, request.remote_addr)
        if isinstance(result, user_service.Throttled):
            # Keyed by the typed email, so an unknown email is held exactly like a known one: this says nothing
            # about whether the account exists, and nothing at all to the owner at another address.
            flash(f"Too many failed sign-ins for this email from your address. Try again in "
                  f"{_duration(result.retry_after)}.", "danger")
            return render_template("auth/login.html", form=form), 429, {"Retry-After": str(result.retry_after)}
        if result is None:
            flash(FAILED, "danger")
            return render_template("auth/login.html", form=form), 200
        session.clear()  # a fresh session on sign-in: nothing from before survives (no fixation)
        login_user(result, remember=form.remember.data)
        return redirect(_safe_next(request.args.get("next")))
    return render_template("auth/login.html", form=form)


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{math.ceil(seconds / 60)} minutes"


@bp.post("/logout")
@access("account")
def logout():
    """Sign out everywhere: bumping the session version ends every session and remember-me cookie."""
    commit_once(_end_every_session, current_user.id)
    session.clear()
    logout_user()  # after clear(): it leaves the note that makes Flask-Login delete the remember-me cookie
    flash("You have signed out.", "info")
    return redirect(url_for("auth.login"))


def _end_every_session(user_id: int) -> None:
    # The user loader compares each session's version with the user's: a bump revokes them all.
    user_service.get_user(user_id).session_version += 1


@bp.route("/forgot-password", methods=["GET", "POST"])
@limiter.limit(password_reset_limit, key_func=client_ip_key, methods=["POST"])
@access(PUBLIC)
def forgot_password():
    """Email a reset link if the account exists; say the same thing either way."""
    form = ForgotPasswordForm()
    if form.validate_on_submit():
        flash("If that address belongs to an account, a reset link is on its way.", "info")
        response = redirect(url_for("auth.login"))
        # Everything that depends on whether the address is known (the lookup, the quota's audit write, the SMTP
        # conversation) runs once the answer has gone out, so the answer is the same, byte for byte and to the
        # millisecond, for every address: a stopwatch cannot tell staff addresses from others.
        response.call_on_close(partial(_mail_reset_link_after_answer, current_app._get_current_object(),
                                       form.email.data, current_actor(), request.script_root))
        return response
    return render_template("auth/forgot_password.html", form=form)


def _mail_reset_link_after_answer(app, email: str, actor: Actor, script_root: str) -> None:
    """Claim a reset email for `email` and send it; runs after the response, so it logs rather than raises."""
    # A request context of its own: the link is built with url_for under the original script root (the asking
    # request's context is gone by now), and the quota's audit event keeps the asker's address through `actor`.
    with app.test_request_context(environ_overrides={"SCRIPT_NAME": script_root}), acting_as(actor):
        try:
            user = commit_once(user_service.claim_reset_email, email)
            if user is not None:
                _send_reset_link(user, invited=False)
        except Exception:  # noqa: BLE001  (nobody is waiting for an answer; the log is where this must show)
            app.logger.exception("could not handle a password reset request")


def _send_reset_link(user, invited: bool) -> bool:
    """Mail `user` a password link built on PUBLIC_URL only; return whether it was sent."""
    base = current_app.config.get("PUBLIC_URL")
    if not base:
        if current_app.config["PRODUCTION"]:
            # Never fall back to the request's Host: a forged Host header would get a working reset token mailed
            # to the victim inside a link to the attacker's site.
            current_app.logger.error("PUBLIC_URL is not set: not mailing a password link to user %s", user.id)
            return False
        base = DEVELOPMENT_PUBLIC_URL
    token = user_service.make_reset_token(user)
    link = base.rstrip("/") + url_for("auth.reset_password", token=token)
    hours = max(1, current_app.config["PASSWORD_RESET_MAX_AGE"] // 3600)
    if invited:
        subject = "You have been invited to ISP Admin"
        opening = "An administrator created an ISP Admin account for you. Choose your password here:"
    else:
        subject = "Reset your ISP Admin password"
        opening = "Someone (hopefully you) asked to reset your ISP Admin password. Choose a new one here:"
    body = f"Hello {user.name},\n\n{opening}\n\n{link}\n\nThe link works once and expires in {hours} hour(s).\n"
    try:
        send_email(user.email, subject, body)
    except OSError:
        current_app.logger.exception("could not send the password email to user %s", user.id)
        return False
    return True


@bp.route("/reset-password/<token>", methods=["GET", "POST"])
@access(PUBLIC)
def reset_password(token: str):
    """Set a new password through an emailed link (works once, expires)."""
    try:
        user_service.user_for_reset_token(token)
    except Invalid as exc:
        flash(exc.message, "danger")
        return redirect(url_for("auth.forgot_password"))
    form = ResetPasswordForm()
    if form.validate_on_submit() and perform(user_service.reset_password, token, form.password.data,
                                             form=form) is not REFUSED:
        logout_user()
        flash("Your password is set. Please sign in.", "success")
        return redirect(url_for("auth.login"))
    return render_template("auth/reset_password.html", form=form)


@bp.route("/account/password", methods=["GET", "POST"])
@access("account")
def change_password():
    """Change one's own password; every other session ends."""
    form = ChangePasswordForm()
    if form.validate_on_submit():
        user = perform(user_service.change_password, current_user.id, form.current_password.data,
                       form.password.data, form=form)
        if user is not REFUSED:
            # Keep this session under the new session version, and renew its remember-me cookie if it has one.
            login_user(user, remember=current_app.config.get("REMEMBER_COOKIE_NAME", COOKIE_NAME) in request.cookies)
            flash("Your password has been changed. Other sessions were signed out.", "success")
            return redirect(url_for("dashboard.index"))
    return render_template("auth/change_password.html", form=form)

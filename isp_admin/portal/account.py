"""Portal sign-in and sign-out, password links, the profile (contact, preferences) and password change."""
from __future__ import annotations

from functools import partial

from flask import current_app, flash, g, redirect, render_template, request, url_for

from isp_admin.access import PUBLIC, access
from isp_admin.errors import Invalid
from isp_admin.extensions import limiter
from isp_admin.portal.forms import ChangePasswordForm, LinkRequestForm, LoginForm, ProfileForm, SetPasswordForm
from isp_admin.portal.guard import portal_actor, portal_login_required, safe_next, sign_in, sign_out, signed_in
from isp_admin.portal.views import bp
from isp_admin.portal.work import REFUSED, perform
from isp_admin.ratelimit import client_ip_key, login_limit, password_reset_limit
from isp_admin.services.platform.audit import Actor, acting_as
from isp_admin.services.portal import accounts as portal_accounts
from isp_admin.services.portal import logins as portal_logins
from isp_admin.unit_of_work import commit_once

FAILED = "Invalid account number, email or password."
LINK_SENT = "If we have an account with an email address for that, a link to set your password is on its way."


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(login_limit, key_func=client_ip_key, methods=["POST"])
@access(PUBLIC)
def login():
    """Sign a customer in by account number or email; every failure gets the same answer."""
    if signed_in() is not None:
        return redirect(safe_next(request.args.get("next")))
    form = LoginForm()
    if form.validate_on_submit():
        with acting_as(portal_actor()):
            # A refusal commits too: the failure count it wrote must stay, or guessing would cost nothing.
            result = commit_once(portal_logins.authenticate, form.identifier.data, form.password.data,
                                 request.remote_addr)
        if isinstance(result, portal_logins.Throttled):
            flash(f"Too many failed sign-ins from your address. Try again in {result.retry_after} seconds.",
                  "danger")
            return render_template("portal/login.html", form=form), 429, {"Retry-After": str(result.retry_after)}
        if result is None:
            flash(FAILED, "danger")
            return render_template("portal/login.html", form=form), 200
        sign_in(result)
        return redirect(safe_next(request.args.get("next")))
    return render_template("portal/login.html", form=form)


@bp.post("/logout")
@access(PUBLIC)
def logout():
    """Sign out of the portal on this device."""
    sign_out()
    flash("You have signed out.", "info")
    return redirect(url_for("portal.login"))


@bp.route("/password-link", methods=["GET", "POST"])
@limiter.limit(password_reset_limit, key_func=client_ip_key, methods=["POST"])
@access(PUBLIC)
def password_link():
    """Email a link to set the password to the customer(s) an account number or email names; same answer always."""
    form = LinkRequestForm()
    if form.validate_on_submit():
        flash(LINK_SENT, "info")
        response = redirect(url_for("portal.login"))
        # The lookup, the quota and the SMTP conversation run once the answer has gone: the answer is the same,
        # to the byte and the millisecond, whether or not the identifier is a customer's.
        response.call_on_close(partial(_send_link_after_answer, current_app._get_current_object(),
                                       form.identifier.data, portal_actor(), request.script_root))
        return response
    return render_template("portal/password_link.html", form=form)


def _send_link_after_answer(app, identifier: str, actor: Actor, script_root: str) -> None:
    with app.test_request_context(environ_overrides={"SCRIPT_NAME": script_root}), acting_as(actor):
        try:
            commit_once(portal_accounts.request_link, identifier)
        except Exception:  # noqa: BLE001  (nobody waits for an answer; the log is where this must show)
            app.logger.exception("could not handle a portal password link request")


@bp.route("/set-password/<token>", methods=["GET", "POST"])
@limiter.limit(password_reset_limit, key_func=client_ip_key, methods=["POST"])
@access(PUBLIC)
def set_password(token: str):
    """Choose a password through an emailed link (works once, expires)."""
    try:
        portal_accounts.account_for_token(token)
    except Invalid as exc:
        flash(exc.message, "danger")
        return redirect(url_for("portal.password_link"))
    form = SetPasswordForm()
    if form.validate_on_submit():
        with acting_as(portal_actor()):
            account = perform(portal_accounts.set_password, token, form.password.data, form=form)
        if account is not REFUSED:
            sign_in(account)
            flash("Your password is set. Welcome to your account.", "success")
            return redirect(url_for("portal.dashboard"))
        if not form.errors:  # not the password's fault: the link died meanwhile (used at once elsewhere)
            return redirect(url_for("portal.password_link"))
    return render_template("portal/set_password.html", form=form), 422 if form.errors else 200


@bp.route("/profile", methods=["GET", "POST"])
@access(PUBLIC)
@portal_login_required
def profile():
    """Contact details and notification preferences."""
    account, customer = g.portal_account, g.customer
    form = ProfileForm(data={"email": customer.email, "phone": customer.phone,
                             "email_reminders": account.email_reminders, "email_receipts": account.email_receipts})
    if form.validate_on_submit() and perform(
            portal_accounts.update_profile, account.id, email=form.email.data, phone=form.phone.data,
            email_reminders=form.email_reminders.data, email_receipts=form.email_receipts.data,
            form=form) is not REFUSED:
        flash("Your details are saved.", "success")
        return redirect(url_for("portal.profile"))
    return render_template("portal/profile.html", form=form, password_form=ChangePasswordForm(formdata=None)), \
        422 if form.errors else 200


@bp.post("/profile/password")
@limiter.limit(login_limit, key_func=client_ip_key)
@access(PUBLIC)
@portal_login_required
def change_password():
    """Change the password; every other portal session of this customer ends."""
    form = ChangePasswordForm()
    if form.validate_on_submit():
        account = perform(portal_accounts.change_password, g.portal_account.id, form.current_password.data,
                          form.password.data, form=form)
        if account is not REFUSED:
            sign_in(account)  # this session carries on under the new session version
            flash("Your password has been changed. Other sessions were signed out.", "success")
            return redirect(url_for("portal.profile"))
    customer = g.customer
    profile_form = ProfileForm(formdata=None, data={
        "email": customer.email, "phone": customer.phone, "email_reminders": g.portal_account.email_reminders,
        "email_receipts": g.portal_account.email_receipts})
    return render_template("portal/profile.html", form=profile_form, password_form=form), 422


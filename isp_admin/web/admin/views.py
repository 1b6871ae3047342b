"""Staff administration (admins only): list, invite (and resend), change role, deactivate, reactivate, unlock."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from isp_admin.services.identity import users as user_service
from isp_admin.services.platform.audit import entity_history
from isp_admin.services.platform.bounds import MAX_PAGE_NUMBER
from isp_admin.services.platform.clock import utcnow
from isp_admin.web.access import access
from isp_admin.web.admin.forms import InviteUserForm, RoleForm
from isp_admin.web.auth.views import _send_reset_link
from isp_admin.web.dev.outbox import mail_notice
from isp_admin.web.unit_of_work import REFUSED, perform

bp = Blueprint("admin", __name__, url_prefix="/admin")
PER_PAGE = 50


@bp.get("/users/")
@access("users.manage")
def users():
    """List staff users."""
    # Clamped: an absurd ?page= would become an OFFSET past PostgreSQL's bigint (a 500 instead of an empty page).
    page = user_service.list_users(min(max(1, request.args.get("page", 1, type=int)), MAX_PAGE_NUMBER), PER_PAGE)
    return render_template("admin/users.html", page=page, states=user_service.sign_in_states(page.items),
                           now_utc=utcnow())


@bp.route("/users/new", methods=["GET", "POST"])
@access("users.manage")
def invite():
    """Create a staff account and email the invitation link."""
    form = InviteUserForm()
    if form.validate_on_submit():
        user = perform(user_service.create_user, form.email.data, form.name.data, form.role.data, form=form)
        if user is not REFUSED:
            if _send_reset_link(user, invited=True):
                flash(mail_notice("Invitation", user.email), "success")
            else:
                flash(f"{user.email} was created, but the invitation could not be mailed (is PUBLIC_URL set?); "
                      "they can ask for a reset link.", "warning")
            return redirect(url_for("admin.users"))
    return render_template("admin/invite.html", form=form)


@bp.post("/users/<id:user_id>/resend-invitation")
@access("users.manage")
def resend_invitation(user_id: int):
    """Mail a new invitation link to a user who has never signed in (audited; a few per hour per account)."""
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return _back(user_id)
    user = perform(user_service.claim_invitation_resend, user_id)
    if user is not REFUSED:
        if _send_reset_link(user, invited=True):
            flash(mail_notice("A new invitation", user.email), "success")
        else:
            flash(f"The invitation to {user.email} could not be mailed (is PUBLIC_URL set?).", "warning")
    return _back(user_id)


@bp.route("/users/<id:user_id>", methods=["GET", "POST"])
@access("users.manage")
def user_detail(user_id: int):
    """Show a staff user and change their role."""
    user = user_service.get_user(user_id)
    form = RoleForm(obj=user)
    if form.validate_on_submit() and perform(user_service.update_user, user.id, acting_user_id=current_user.id,
                                             role=form.role.data, form=form) is not REFUSED:
        flash("Role changed.", "success")
        return redirect(url_for("admin.user_detail", user_id=user.id))
    return render_template("admin/user.html", user=user, form=form, action_form=FlaskForm(),
                           state=user_service.sign_in_states([user])[user.id], now_utc=utcnow(),
                           history=entity_history("users", user.id))


def _set_active(user_id: int, active: bool, message: str):
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return redirect(url_for("admin.user_detail", user_id=user_id))
    if perform(user_service.update_user, user_id, acting_user_id=current_user.id, active=active) is not REFUSED:
        flash(message, "success")
    return redirect(url_for("admin.user_detail", user_id=user_id))


@bp.post("/users/<id:user_id>/deactivate")
@access("users.manage")
def deactivate(user_id: int):
    """Deactivate a user: they are signed out everywhere and cannot sign in."""
    return _set_active(user_id, False, "User deactivated.")


@bp.post("/users/<id:user_id>/reactivate")
@access("users.manage")
def reactivate(user_id: int):
    """Let a deactivated user sign in again."""
    return _set_active(user_id, True, "User reactivated.")


@bp.post("/users/<id:user_id>/unlock")
@access("users.manage")
def unlock(user_id: int):
    """Clear a user's lock and throttled addresses (audited), so they can sign in at once."""
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return redirect(url_for("admin.user_detail", user_id=user_id))
    user = perform(user_service.unlock_user, user_id)
    if user is not REFUSED:
        flash(f"Sign-in unlocked for {user.email}.", "success")
    return _back(user_id)


def _back(user_id: int):
    # The list's buttons return to the list; the detail page's to the detail page.
    if request.form.get("next") == "list":
        return redirect(url_for("admin.users"))
    return redirect(url_for("admin.user_detail", user_id=user_id))

"""One's own API tokens: list, create (the secret is shown once), revoke."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from isp_admin.services.identity import tokens as token_service
from isp_admin.services.platform.clock import utcnow
from isp_admin.web.access import access
from isp_admin.web.account.forms import TokenForm
from isp_admin.web.unit_of_work import REFUSED, commit_once, perform

bp = Blueprint("account", __name__, url_prefix="/account")


def _page(form: TokenForm, secret: str | None = None, status: int = 200):
    return render_template("account/tokens.html", form=form, secret=secret, action_form=FlaskForm(),
                           tokens=token_service.list_tokens(current_user.id), now=utcnow(),
                           allowed=token_service.allowed_scopes(current_user.role)), status


@bp.route("/tokens", methods=["GET", "POST"])
@access("account")
def tokens():
    """List one's tokens and create one; the new secret is rendered once, never stored."""
    form = TokenForm()
    if form.validate_on_submit():
        made = perform(token_service.create_token, current_user.id, form.name.data, form.scopes.data,
                       utcnow() + timedelta(days=form.expires_days.data), form=form)
        if made is REFUSED:
            return _page(form, status=422)
        _, secret = made
        return _page(TokenForm(formdata=None), secret=secret)
    return _page(form)


@bp.post("/tokens/<id:token_id>/revoke")
@access("account")
def revoke(token_id: int):
    """Revoke one of one's tokens."""
    # No form to show a refusal on: an unknown or someone else's token goes to the error page.
    token = commit_once(token_service.revoke_token, token_id, current_user.id)
    flash(f"Token {token.name} ({token.prefix}…) is revoked.", "success")
    return redirect(url_for("account.tokens"))

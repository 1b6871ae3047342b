"""One's own API tokens: list, create (the secret is shown once), revoke."""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from isp_admin.errors import AppError
from isp_admin.extensions import db
from isp_admin.models.base import utcnow
from isp_admin.services import tokens as token_service
from isp_admin.web.access import access
from isp_admin.web.account.forms import TokenForm
from isp_admin.web.templating import show_form_error

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
        try:
            _, secret = token_service.create_token(current_user.id, form.name.data, form.scopes.data,
                                                   utcnow() + timedelta(days=form.expires_days.data))
        except AppError as exc:
            show_form_error(form, exc)
            return _page(form, status=422)
        db.session.commit()
        return _page(TokenForm(formdata=None), secret=secret)
    return _page(form)


@bp.post("/tokens/<id:token_id>/revoke")
@access("account")
def revoke(token_id: int):
    """Revoke one of one's tokens."""
    token = token_service.revoke_token(token_id, current_user.id)
    db.session.commit()
    flash(f"Token {token.name} ({token.prefix}…) is revoked.", "success")
    return redirect(url_for("account.tokens"))

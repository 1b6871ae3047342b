"""The development mail viewer: the emails `make run` writes to instance/outbox/, newest first, one at a time.

It exists only outside production and while no MAIL_URL is set; otherwise every URL under /dev/ is a 404, for
everyone. Admins only: the outbox holds every staff member's invitation and password-reset links.
"""
from __future__ import annotations

from flask import Blueprint, abort, render_template, request

from isp_admin.services.messaging import mail
from isp_admin.services.platform.bounds import MAX_PAGE_NUMBER
from isp_admin.web.access import access, can
from isp_admin.web.dev.outbox import viewer_enabled

bp = Blueprint("dev", __name__, url_prefix="/dev")
PER_PAGE = 50


@bp.before_request
def only_in_development():
    """Answer 404 before any access check when the viewer is off, so production does not even hint at it."""
    if not viewer_enabled():
        abort(404)


@bp.app_context_processor
def mail_viewer_link():
    """Tell the navbar whether to offer Mail (dev) to the signed-in user."""
    return {"dev_mail_link": lambda: viewer_enabled() and can("users.manage")}


@bp.get("/mail/")
@access("users.manage")
def mail_index():
    """List the outbox's emails, newest first."""
    page = min(max(1, request.args.get("page", 1, type=int)), MAX_PAGE_NUMBER)
    entries, total = mail.list_outbox(page, PER_PAGE)
    return render_template("dev/mail.html", entries=entries, total=total, page=page,
                           pages=max(1, -(-total // PER_PAGE)))


@bp.get("/mail/<name>")
@access("users.manage")
def mail_message(name: str):
    """Show one email of the outbox as text (HTML parts are shown escaped, never rendered)."""
    return render_template("dev/message.html", message=mail.read_outbox_message(name))

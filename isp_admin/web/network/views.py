"""Network pages: the CoA outbox and its failures, routers (NAS), policy, and the billing ↔ network mismatches."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm

from isp_admin.services.network import coa
from isp_admin.services.network import queries as network_queries
from isp_admin.web.access import access
from isp_admin.web.unit_of_work import REFUSED, perform

bp = Blueprint("network", __name__, url_prefix="/network")


@bp.get("/")
@access("view")
def index():
    """The CoA outbox: failed requests first (each retryable), then the latest ones."""
    status = request.args.get("status") or None
    if status not in (None, "pending", "failed", "acked"):
        status = None
    rows = network_queries.coa_requests(status=status, limit=100)
    return render_template("network/index.html", rows=rows, status=status, counts=coa.counts_by_status(),
                           action_form=FlaskForm())


@bp.post("/coa/<id:request_id>/retry")
@access("network.operate")
def retry(request_id: int):
    """Queue a failed Disconnect/CoA again."""
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
    elif perform(coa.retry_request, request_id) is not REFUSED:
        flash("Queued again: it is sent within a minute.", "success")
    return redirect(request.referrer or url_for("network.index"))


from isp_admin.web.network import sessions  # noqa
from isp_admin.web.network import mismatches  # noqa: E402,F401
from isp_admin.web.network import routers, settings  # noqa: E402,F401

"""Network → Billing ↔ network: every mismatch found now, with its one-click fix, and the last nightly check."""
from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_wtf import FlaskForm

from isp_admin.services.network import reconcile
from isp_admin.web.access import access
from isp_admin.web.network.views import bp
from isp_admin.web.unit_of_work import REFUSED, perform

# Rows shown per kind; the counts above them are always complete.
PAGE_LIMIT = 100


@bp.get("/mismatches")
@access("view")
def mismatches():
    """The subscriptions and sessions whose network state disagrees with billing, each with its fix."""
    report = reconcile.find_mismatches(limit=PAGE_LIMIT)
    return render_template("network/mismatches.html", report=report, last=reconcile.last_check(),
                           kinds=reconcile.KINDS, labels=reconcile.LABELS, limit=PAGE_LIMIT, action_form=FlaskForm())


def _fix(action, record_id: int, done: str):
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
    elif perform(action, record_id) is not REFUSED:
        flash(done, "success")
    return redirect(url_for("network.mismatches"))


@bp.post("/mismatches/sessions/<id:radacct_id>/disconnect")
@access("network.operate")
def mismatch_disconnect(radacct_id: int):
    """Queue a Disconnect-Request for a session billing says should not be online as it is."""
    return _fix(reconcile.disconnect, radacct_id, "Disconnect queued: the router gets it within a minute.")


@bp.post("/mismatches/subscriptions/<id:subscription_id>/resend")
@access("network.operate")
def mismatch_resend(subscription_id: int):
    """Send the subscription's open sessions what the network says now (its plan's CoA, or a Disconnect)."""
    return _fix(reconcile.resend, subscription_id, "Queued: the router gets it within a minute.")


@bp.post("/mismatches/subscriptions/<id:subscription_id>/acknowledge")
@access("network.operate")
def mismatch_acknowledge(subscription_id: int):
    """Take a refused login off the list until the subscription changes or logs in again."""
    return _fix(reconcile.acknowledge_rejection, subscription_id,
                "Acknowledged: it comes back if the subscription changes, or if the network refuses it again after "
                "accepting it.")

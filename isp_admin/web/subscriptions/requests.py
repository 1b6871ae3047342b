"""The queue of plan changes customers asked for in the portal: staff approve (the plan changes) or reject.

Routes on the subscriptions blueprint (views.py imports this module once it has made the blueprint).
"""
from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_wtf import FlaskForm
from wtforms import TextAreaField
from wtforms.validators import Length, Optional

from isp_admin.services.payments import queries as request_queries
from isp_admin.services.platform.clock import today
from isp_admin.web.access import access, can
from isp_admin.web.subscriptions.views import bp
from isp_admin.web.unit_of_work import REFUSED, perform


class DecisionForm(FlaskForm):
    """Approve or reject a plan change request, with an optional note to keep on it."""

    note = TextAreaField("Note", validators=[Optional(), Length(max=500)])


@bp.get("/requests/plan-changes")
@access("view")
def plan_change_requests():
    """List the pending plan change requests, oldest first."""
    return render_template("subscriptions/requests.html", queue=request_queries.pending_plan_changes(),
                           form=DecisionForm(formdata=None))


def _decide(action, *args, done: str):
    form = DecisionForm()
    if not form.validate_on_submit():
        flash(next(iter(form.errors.values()))[0] if form.errors else "Please try again.", "danger")
    elif perform(action, *args, note=form.note.data or None) is not REFUSED:
        flash(done, "success")
    return redirect(url_for("subscriptions.plan_change_requests"))


@bp.post("/requests/plan-changes/<id:request_id>/approve")
@access("subscriptions.edit")
def approve_plan_change(request_id: int):
    """Approve a request: the subscription moves to the plan asked for (credited and charged as any change)."""
    from isp_admin.services.portal import plan_changes  # the portal domain's module; imported when used

    return _decide(lambda *args, **kwargs: plan_changes.approve(*args, may_bill=can("billing.edit"), **kwargs),
                   request_id, today(), done="Request approved: the plan is changed.")


@bp.post("/requests/plan-changes/<id:request_id>/reject")
@access("subscriptions.edit")
def reject_plan_change(request_id: int):
    """Reject a request, with a note the customer sees."""
    from isp_admin.services.portal import plan_changes  # the portal domain's module; imported when used

    return _decide(plan_changes.reject, request_id, done="Request rejected.")

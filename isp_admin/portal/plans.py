"""Plan change requests from the portal: ask for another plan for a subscription, see the answer, withdraw."""
from __future__ import annotations

from flask import flash, g, redirect, render_template, url_for
from flask_wtf import FlaskForm

from isp_admin.access import PUBLIC, access
from isp_admin.portal.forms import PlanChangeForm
from isp_admin.portal.guard import portal_login_required
from isp_admin.portal.views import bp
from isp_admin.portal.work import REFUSED, perform
from isp_admin.services.customers.plans import plan_choices
from isp_admin.services.portal import plan_changes
from isp_admin.services.portal import queries as portal_queries


def _form() -> PlanChangeForm:
    form = PlanChangeForm()
    live = [s for s in portal_queries.subscriptions(g.customer.id) if s.status != "cancelled"]
    form.subscription_id.choices = [(s.id, f"{s.plan_name} (#{s.id}, {s.status})") for s in live]
    form.plan_id.choices = plan_choices(active_only=True)
    return form


def _page(form: PlanChangeForm, status: int = 200):
    return render_template("portal/plan_change.html", form=form, withdraw_form=FlaskForm(formdata=None),
                           requests=plan_changes.customer_requests(g.customer.id)), status


@bp.get("/plan-change")
@access(PUBLIC)
@portal_login_required
def plan_change():
    """The plans offered, a form to ask for one, and the customer's requests with staff's answers."""
    return _page(_form())


@bp.post("/plan-change")
@access(PUBLIC)
@portal_login_required
def request_plan_change():
    """Ask staff to move a subscription to another plan (one request waits at a time per subscription)."""
    form = _form()
    if form.validate_on_submit():
        made = perform(plan_changes.request_change, g.customer.id, form.subscription_id.data, form.plan_id.data,
                       form.note.data, form=form)
        if made is not REFUSED:
            flash("Your request is with our staff. We will change the plan once they approve it.", "success")
            return redirect(url_for("portal.plan_change"))
    return _page(form, 422)


@bp.post("/plan-change/<id:request_id>/withdraw")
@access(PUBLIC)
@portal_login_required
def withdraw_plan_change(request_id: int):
    """Withdraw one of the customer's pending requests."""
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
    elif perform(plan_changes.withdraw, g.customer.id, request_id) is not REFUSED:
        flash("Request withdrawn.", "info")
    return redirect(url_for("portal.plan_change"))

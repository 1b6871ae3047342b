"""Plan pages: list, create, edit (with its RADIUS attributes), retire, reactivate, delete an unused plan."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm

from isp_admin.services.customers import plans as plan_service
from isp_admin.services.network import settings as network_settings
from isp_admin.services.platform.audit import entity_history
from isp_admin.services.platform.bounds import MAX_PAGE_NUMBER
from isp_admin.web.access import access
from isp_admin.web.plans.forms import PlanAttributeForm, PlanAttributeRemoveForm, PlanForm
from isp_admin.web.unit_of_work import REFUSED, perform

bp = Blueprint("plans", __name__, url_prefix="/plans")
PER_PAGE = 50


@bp.get("/")
@access("view")
def index():
    """List plans with their live subscription counts."""
    # Clamped: an absurd ?page= would become an OFFSET past PostgreSQL's bigint (a 500); past the end lands below.
    page = min(max(1, request.args.get("page", 1, type=int)), MAX_PAGE_NUMBER)
    rows, total = plan_service.list_plans_with_usage(page, PER_PAGE)
    pages = max(1, -(-total // PER_PAGE))
    if page > pages:  # a stale or typed page number lands on the last page, not on a false "no plans"
        return redirect(url_for("plans.index", page=pages))
    return render_template("plans/index.html", rows=rows, total=total, page=page, pages=pages,
                           action_form=FlaskForm())


@bp.route("/new", methods=["GET", "POST"])
@access("plans.edit")
def create():
    """Create a plan."""
    form = PlanForm()
    if form.validate_on_submit():
        plan = perform(plan_service.create_plan, form=form, **form.values())
        if plan is not REFUSED:
            flash(f"Plan {plan.code} created.", "success")
            return redirect(url_for("plans.index"))
    return render_template("plans/form.html", form=form, plan=None)


@bp.route("/<id:plan_id>/edit", methods=["GET", "POST"])
@access("plans.edit")
def edit(plan_id: int):
    """Edit a plan."""
    plan = plan_service.get_plan(plan_id)
    form = PlanForm(obj=plan)
    if form.validate_on_submit() and perform(plan_service.update_plan, plan.id, form=form,
                                             **form.values()) is not REFUSED:
        flash("Plan saved.", "success")
        return redirect(url_for("plans.index"))
    return _edit_page(plan, form, PlanAttributeForm(formdata=None))


def _edit_page(plan, form: PlanForm, attribute_form: PlanAttributeForm):
    return render_template("plans/form.html", form=form, plan=plan, history=entity_history("plans", plan.id),
                           radius=network_settings.plan_radius(plan.id), attribute_form=attribute_form,
                           remove_form=PlanAttributeRemoveForm())


@bp.post("/<id:plan_id>/attributes")
@access("plans.edit")
def add_attribute(plan_id: int):
    """Add a RADIUS attribute to the plan's group."""
    plan = plan_service.get_plan(plan_id)
    form = PlanAttributeForm()
    if form.validate_on_submit() and perform(network_settings.add_plan_attribute, plan.id, form.kind.data,
                                             form.attribute.data, form.op.data, form.value.data,
                                             form=form) is not REFUSED:
        flash("Attribute added: it applies at each customer's next login.", "success")
        return redirect(url_for("plans.edit", plan_id=plan.id))
    return _edit_page(plan, PlanForm(formdata=None, obj=plan), form)


@bp.post("/<id:plan_id>/attributes/remove")
@access("plans.edit")
def remove_attribute(plan_id: int):
    """Remove a RADIUS attribute from the plan's group."""
    form = PlanAttributeRemoveForm()
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "danger")
    elif perform(network_settings.remove_plan_attribute, plan_id, form.kind.data, form.attribute.data) is not REFUSED:
        flash("Attribute removed: it applies at each customer's next login.", "success")
    return redirect(url_for("plans.edit", plan_id=plan_id))


def _post_action(plan_id: int, action, message: str):
    form = FlaskForm()
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return redirect(url_for("plans.index"))
    if perform(action, plan_id) is not REFUSED:
        flash(message, "success")
    return redirect(url_for("plans.index"))


@bp.post("/<id:plan_id>/retire")
@access("plans.edit")
def retire(plan_id: int):
    """Retire a plan: existing subscriptions keep it, new ones cannot choose it."""
    return _post_action(plan_id, lambda i: plan_service.set_plan_active(i, False), "Plan retired.")


@bp.post("/<id:plan_id>/reactivate")
@access("plans.edit")
def reactivate(plan_id: int):
    """Offer a retired plan again."""
    return _post_action(plan_id, lambda i: plan_service.set_plan_active(i, True), "Plan is active again.")


@bp.post("/<id:plan_id>/delete")
@access("plans.edit")
def delete(plan_id: int):
    """Delete a plan that no subscription ever used."""
    return _post_action(plan_id, plan_service.delete_plan, "Plan deleted.")

"""Customer pages: list with search and filters, detail, create, edit."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm

from isp_admin.services.billing.queries import account_overview
from isp_admin.services.customers import accounts as customer_service
from isp_admin.services.customers.plans import plan_choices
from isp_admin.services.network.sessions import online_counts
from isp_admin.services.payments.queries import portal_access
from isp_admin.services.platform.clock import today
from isp_admin.web.access import access
from isp_admin.web.customers.forms import CustomerFilterForm, CustomerForm
from isp_admin.web.subscriptions.forms import AddSubscriptionForm
from isp_admin.web.templating import page_size
from isp_admin.web.unit_of_work import REFUSED, perform

bp = Blueprint("customers", __name__, url_prefix="/customers")


@bp.get("/")
@access("view")
def index():
    """List customers: search, filter by status or plan, sort, page by cursor."""
    form = CustomerFilterForm(request.args)
    if not form.validate() or (form.plan.data and int(form.plan.data) > 2**31 - 1):
        abort(400, "The search or filter is not valid.")
    page = customer_service.list_customers(
        q=form.q.data or "", status=form.status.data or None,
        plan_id=int(form.plan.data) if form.plan.data else None, sort=form.sort.data or "name",
        size=page_size(), after=request.args.get("after"), before=request.args.get("before"),
        with_plan_choices=True,
    )
    choices = page.extra.get("plan_choices")
    if choices is None:  # SQLite: the plain, separately cached picker
        choices = plan_choices(active_only=False)
    form.plan.choices = [("", "Any plan")] + [(str(i), label) for i, label in choices]
    filtered = bool(form.q.data or form.status.data or form.plan.data)
    return render_template("customers/index.html", form=form, page=page, filtered=filtered)


@bp.route("/new", methods=["GET", "POST"])
@access("customers.edit")
def create():
    """Create a customer."""
    form = CustomerForm()
    if form.validate_on_submit():
        customer = perform(customer_service.create_customer, form=form, **form.values())
        if customer is not REFUSED:
            flash(f"Customer {customer.account_number} created.", "success")
            return redirect(url_for("customers.detail", customer_id=customer.id))
    return render_template("customers/form.html", form=form, customer=None)


@bp.get("/<id:customer_id>")
@access("view")
def detail(customer_id: int):
    """Show a customer's profile, subscriptions and history."""
    customer = customer_service.get_customer(customer_id)
    subscriptions = customer_service.customer_subscriptions(customer.id)
    return render_template(
        "customers/detail.html",
        customer=customer,
        subscriptions=subscriptions,
        online=online_counts([s.id for s in subscriptions if s.pppoe_username]),  # no login, no session
        history=customer_service.customer_history(customer.id),
        add_form=AddSubscriptionForm.for_new(),
        account=account_overview(customer.id, today()),
        portal=portal_access(customer.id),
    )


@bp.route("/<id:customer_id>/edit", methods=["GET", "POST"])
@access("customers.edit")
def edit(customer_id: int):
    """Edit a customer's profile."""
    customer = customer_service.get_customer(customer_id)
    form = CustomerForm(obj=customer)
    if form.validate_on_submit() and perform(customer_service.update_customer, customer.id, form=form,
                                             **form.values()) is not REFUSED:
        flash("Customer saved.", "success")
        return redirect(url_for("customers.detail", customer_id=customer.id))
    return render_template("customers/form.html", form=form, customer=customer)


@bp.post("/<id:customer_id>/close")
@access("customers.edit")
def close(customer_id: int):
    """Close a customer's account: refused while it has live service or owes money."""
    customer = customer_service.get_customer(customer_id)
    back = redirect(url_for("customers.detail", customer_id=customer.id))
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return back
    if perform(customer_service.close_customer, customer.id) is REFUSED:
        return back
    flash(f"Account {customer.account_number} closed.", "success")
    return back


@bp.post("/<id:customer_id>/portal-invite")
@access("customers.edit")
def portal_invite(customer_id: int):
    """Email the customer a link to set their portal password (and so sign in)."""
    from isp_admin.services.portal.accounts import send_password_link  # the portal domain's; imported when used

    customer = customer_service.get_customer(customer_id)
    back = redirect(url_for("customers.detail", customer_id=customer.id))
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return back
    if perform(send_password_link, customer.id, failure="No sign-in link sent: {}") is not REFUSED:
        flash(f"A sign-in link for the portal is on its way to {customer.email}.", "success")
    return back

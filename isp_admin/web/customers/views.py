"""Customer pages: list with search and filters, detail, create, edit."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm

from isp_admin.autocommit import autocommit_reads
from isp_admin.services.billing.queries import account_overview
from isp_admin.services.customers import accounts as customer_service
from isp_admin.services.customers import listing as customer_listing
from isp_admin.services.customers.bulk_actions import ACTIONS as CUSTOMER_ACTIONS
from isp_admin.services.customers.plans import plan_choices
from isp_admin.services.network.sessions import online_counts
from isp_admin.services.payments.queries import portal_access
from isp_admin.services.platform.clock import today
from isp_admin.web import lists
from isp_admin.web.access import access, can
from isp_admin.web.customers.forms import CustomerForm
from isp_admin.web.customers.list_form import CustomerListForm
from isp_admin.web.subscriptions.forms import AddSubscriptionForm
from isp_admin.web.unit_of_work import REFUSED, perform

bp = Blueprint("customers", __name__, url_prefix="/customers")


@bp.get("/")
@autocommit_reads  # one page of one list and its count: no shared snapshot needed
@access("view")
def index():
    """List customers: search, filter by status, plan or suspension reason, sort by column, page by number."""
    form = CustomerListForm(request.args)
    if not form.validate():
        abort(400, "The search or filter is not valid.")
    where = lists.paging()
    page = lists.numbered(customer_listing.customer_page(**form.filters(), sort=form.chosen_sort(), **where.query()),
                          where)
    if (last := lists.past_the_end(page)) is not None:
        return redirect(last)
    choices = page.extra.get("plan_choices")
    if choices is None:  # SQLite, or a reason filter: the plain, separately cached picker
        choices = plan_choices(active_only=False)
    form.plan.choices = [("", "Any plan")] + [(str(i), label) for i, label in choices]
    actions = [(name, action.label, url_for("bulk.customers_preview"))
               for name, action in CUSTOMER_ACTIONS.items()] if can("subscriptions.edit") else []
    return render_template("customers/index.html", form=form, page=page, filtered=form.is_filtered(),
                           export_url=url_for("customers.export", **lists.filter_args()),
                           filter_query=lists.filter_query(), bulk_actions=actions)


@bp.get("/export.csv")
@access("view")
def export():
    """Download every customer the list's search and filters match, in the list's order, as CSV."""
    form = CustomerListForm(request.args)
    if not form.validate():
        abort(400, "The search or filter is not valid.")
    rows = customer_listing.customer_csv_rows(**form.filters(), sort=form.chosen_sort())
    return lists.csv_download("customers", customer_listing.CUSTOMER_CSV_HEADER, rows)


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

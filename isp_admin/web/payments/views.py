"""Payment pages: record (double-submit safe), list, detail with allocations, reverse."""
from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from isp_admin.autocommit import autocommit_reads
from isp_admin.services.billing import listing as payment_listing
from isp_admin.services.billing import payments as payment_service
from isp_admin.services.billing import queries as invoice_queries
from isp_admin.services.customers.accounts import get_customer
from isp_admin.services.payments import queries as payment_queries
from isp_admin.services.payments import refunds
from isp_admin.services.platform.clock import today
from isp_admin.web import lists
from isp_admin.web.access import access
from isp_admin.web.payments.forms import (
    CustomerPickForm,
    PaymentForm,
    RecordRefundForm,
    RefundForm,
    ReverseForm,
)
from isp_admin.web.payments.list_form import PaymentListForm
from isp_admin.web.unit_of_work import REFUSED, perform

bp = Blueprint("payments", __name__, url_prefix="/payments")


@bp.get("/")
@autocommit_reads  # one page of one list and its count: no shared snapshot needed
@access("view")
def index():
    """List payments: filter by customer, method, status and date received; sort by column; page by number."""
    form = PaymentListForm(request.args)
    if not form.validate():
        flash("Please correct the filters.", "danger")
        return render_template("payments/index.html", form=form, page=None, filtered=True), 400
    where = lists.paging()
    page = lists.numbered(payment_listing.payment_page(form.filters(), sort=form.chosen_sort(), **where.query()),
                          where)
    if (last := lists.past_the_end(page)) is not None:
        return redirect(last)
    return render_template("payments/index.html", form=form, page=page, filtered=form.is_filtered(),
                           export_url=url_for("payments.export", **lists.filter_args()),
                           filter_query=lists.filter_query())


@bp.get("/export.csv")
@access("view")
def export():
    """Download every payment the list's filters match, in the list's order, as CSV."""
    form = PaymentListForm(request.args)
    if not form.validate():
        abort(400, "Please correct the filters.")
    rows = payment_listing.payment_csv_rows(form.filters(), sort=form.chosen_sort())
    return lists.csv_download("payments", payment_listing.PAYMENT_CSV_HEADER, rows)


def _customer_id_from_request() -> int | None:
    raw = request.form.get("customer_id") if request.method == "POST" else request.args.get("customer_id")
    return int(raw) if raw and raw.isdigit() and int(raw) < 2**63 else None


@bp.route("/new", methods=["GET", "POST"])
@access("billing.edit")
def new():
    """Record money received from a customer; posting the same form twice records it once."""
    customer_id = _customer_id_from_request()
    if customer_id is None:
        return _pick_customer()
    customer = get_customer(customer_id)
    invoices = invoice_queries.open_invoice_choices(customer.id)
    form = PaymentForm.for_customer(customer.id, invoices, request.args.get("invoice_id", type=int))
    similar = []
    if form.validate_on_submit():
        recorded = perform(
            payment_service.record_payment,
            customer.id, form.amount_cents.data, form.method.data, form.received_on.data, today(),
            reference=form.reference.data, invoice_id=form.chosen_invoice(),
            idempotency_key=form.idempotency_key.data, idempotency_scope="web",
            refuse_similar=not form.confirm_duplicate.data, form=form)
        if recorded is not REFUSED:
            payment, created = recorded
            if created:
                flash(_recorded_message(payment.id), "success")
            else:
                flash("This payment was already recorded (the form was sent twice); nothing was added.", "info")
            return redirect(url_for("payments.detail", payment_id=payment.id))
        if form.confirm_duplicate.errors:  # refused as a likely duplicate: show what it looks like
            similar = payment_service.similar_payments(customer.id, form.amount_cents.data, form.reference.data,
                                                       form.received_on.data)
    elif form.is_submitted():
        flash("Please correct the highlighted fields.", "danger")
    return render_template("payments/new.html", form=form, customer=customer, invoices=invoices,
                           similar=similar), 422 if form.is_submitted() else 200


def _recorded_message(payment_id: int) -> str:
    detail = invoice_queries.payment_detail(payment_id)
    applied = len(detail.allocations)
    message = f"Payment recorded and applied to {applied} invoice{'' if applied == 1 else 's'}."
    if detail.credit_cents:
        from isp_admin.web.templating import money

        message += f" {money(detail.credit_cents, detail.payment.currency)} is kept as credit."
    return message


def _pick_customer():
    """Ask which customer paid, then come back here with their id."""
    form = CustomerPickForm(request.args)
    if request.args.get("customer") is not None and form.validate():
        customer_id = invoice_queries.find_customer_id(form.customer.data)
        if customer_id is not None:
            return redirect(url_for("payments.new", customer_id=customer_id))
        form.customer.errors = [*form.customer.errors, "No customer has that id or account number."]
    return render_template("payments/pick_customer.html", form=form)


@bp.get("/<id:payment_id>")
@access("view")
def detail(payment_id: int):
    """Show a payment: where its money went, what is left as credit, and its history."""
    return render_detail(payment_id)


def render_detail(payment_id: int, *, reverse_form: ReverseForm | None = None,
                  refund_form: RefundForm | None = None, record_refund_form: RecordRefundForm | None = None,
                  status: int = 200):
    """Render a payment's page, with a posted form's errors where one failed."""
    d = invoice_queries.payment_detail(payment_id)
    return render_template("payments/detail.html", d=d, events=payment_queries.payment_events(payment_id),
                           refunds_by_api=refunds.can_refund(d.payment.provider),
                           reverse_form=reverse_form or ReverseForm(formdata=None),
                           refund_form=refund_form or RefundForm(formdata=None),
                           record_refund_form=record_refund_form or RecordRefundForm(formdata=None)), status


@bp.post("/<id:payment_id>/reverse")
@access("billing.edit")
def reverse(payment_id: int):
    """Reverse a payment (a bounced transfer): its invoices reopen."""
    payment_service.get_payment(payment_id)
    form = ReverseForm()
    if form.validate_on_submit():
        if perform(payment_service.reverse_payment, payment_id, form.reason.data, today(), form=form) is not REFUSED:
            flash("Payment reversed; the invoices it paid are open again.", "success")
            return redirect(url_for("payments.detail", payment_id=payment_id))
    else:
        flash("Say why the payment is reversed.", "danger")
    return render_detail(payment_id, reverse_form=form, status=422)


# The online payments' staff pages register their routes on `bp`; imported last, as they import it from here.
from isp_admin.web.payments import online  # noqa: E402, F401

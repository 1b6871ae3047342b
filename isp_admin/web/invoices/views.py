"""Invoice pages: list, detail that explains every amount, drafts, issue, send, void, PDF, and a customer's
statement and "generate invoice now"."""
from __future__ import annotations

from datetime import date, timedelta

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from markupsafe import Markup, escape

from isp_admin.autocommit import autocommit_reads
from isp_admin.errors import AppError
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.billing import listing as invoice_listing
from isp_admin.services.billing import pdf as pdf_service
from isp_admin.services.billing import queries as invoice_queries
from isp_admin.services.billing import rebill
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.bulk_actions import ACTIONS as INVOICE_ACTIONS
from isp_admin.services.customers.accounts import get_customer
from isp_admin.services.messaging import delivery
from isp_admin.services.platform.bounds import check_service_dates
from isp_admin.services.platform.clock import today
from isp_admin.web import lists
from isp_admin.web.access import access, can
from isp_admin.web.invoices.forms import DraftForm, StatementForm, VoidForm
from isp_admin.web.invoices.list_form import InvoiceListForm
from isp_admin.web.templating import money
from isp_admin.web.unit_of_work import REFUSED, perform

# No url_prefix: the statement and "generate invoice now" live under the customer's URL.
bp = Blueprint("invoices", __name__)


@bp.get("/invoices/")
@autocommit_reads  # one page of one list and its count: no shared snapshot needed
@access("view")
def index():
    """List invoices: filter by status, customer, dates, amount and days past due; sort by column; page by number."""
    form = InvoiceListForm(request.args)
    if not form.validate():
        flash("Please correct the filters.", "danger")
        return render_template("invoices/index.html", form=form, page=None, filtered=True), 400
    where = lists.paging()
    page = lists.numbered(invoice_listing.invoice_page(form.filters(), today(), sort=form.chosen_sort(),
                                                       **where.query()), where)
    if (last := lists.past_the_end(page)) is not None:
        return redirect(last)
    actions = [(name, action.label, url_for("bulk.invoices_preview"))
               for name, action in INVOICE_ACTIONS.items()] if can("billing.edit") else []
    return render_template("invoices/index.html", form=form, page=page, filtered=form.is_filtered(),
                           export_url=url_for("invoices.export", **lists.filter_args()),
                           filter_query=lists.filter_query(), bulk_actions=actions)


@bp.get("/invoices/export.csv")
@access("view")
def export():
    """Download every invoice the list's filters match, in the list's order, as CSV."""
    form = InvoiceListForm(request.args)
    if not form.validate():
        abort(400, "Please correct the filters.")
    rows = invoice_listing.invoice_csv_rows(form.filters(), today(), sort=form.chosen_sort())
    return lists.csv_download("invoices", invoice_listing.INVOICE_CSV_HEADER, rows)


def _render_detail(invoice_id: int, void_form: VoidForm | None = None, status: int = 200):
    detail = invoice_queries.invoice_detail(invoice_id)
    # What "void and re-bill" would issue, shown on the void form to those who may void (a read, no write).
    voidable = detail.invoice.status not in ("draft", "void") and can("billing.edit")
    rebill_plan = rebill.plan_rebill(invoice_id) if voidable else None
    void_plan = invoice_service.plan_void(detail.invoice) if voidable else None
    if void_form is None:
        void_form = VoidForm(formdata=None, then="rebill" if rebill_plan and rebill_plan.possible else "nothing")
    return render_template(
        "invoices/detail.html", d=detail, invoice=detail.invoice, customer=detail.customer, lines=detail.lines,
        payments=[(a, p) for a, p in detail.payments if a.reversed_at is None],
        credits=[(a, n) for a, n in detail.credits if a.reversed_at is None], company=pdf_service.company(),
        void_form=void_form, rebill_plan=rebill_plan, void_plan=void_plan, action_form=FlaskForm(),
    ), status


@bp.get("/invoices/<id:invoice_id>")
@access("view")
def detail(invoice_id: int):
    """Show an invoice and how each amount on it was computed."""
    return _render_detail(invoice_id)


@bp.get("/invoices/<id:invoice_id>.pdf")
@access("view")
def pdf(invoice_id: int):
    """Download the invoice as PDF."""
    invoice = invoice_service.get_invoice(invoice_id)
    try:
        content = pdf_service.render_invoice_pdf(invoice.id)
    except OSError:  # WeasyPrint without its system libraries (pango) cannot render
        flash("This server cannot render PDFs (missing system libraries).", "warning")
    except AppError as exc:
        flash(exc.message, "warning")
    else:
        filename = pdf_service.pdf_filename(invoice)
        return current_app.response_class(content, mimetype="application/pdf", headers={
            "Content-Disposition": f'inline; filename="{filename}"'})
    return redirect(url_for("invoices.detail", invoice_id=invoice.id))


@bp.route("/customers/<id:customer_id>/invoices/new", methods=["GET", "POST"])
@access("billing.edit")
def create_draft(customer_id: int):
    """Write an ad hoc draft invoice (up to five lines) for a customer."""
    customer = get_customer(customer_id)
    form = DraftForm()
    if form.validate_on_submit():
        invoice = perform(invoice_service.create_draft, customer.id, form.values(), today(), form=form)
        if invoice is not REFUSED:
            flash("Draft saved. Check it, then issue it.", "success")
            return redirect(url_for("invoices.detail", invoice_id=invoice.id))
    elif form.is_submitted():
        flash("Please correct the highlighted lines.", "danger")
    return render_template("invoices/draft.html", form=form, customer=customer, invoice=None), \
        422 if form.is_submitted() else 200


@bp.route("/invoices/<id:invoice_id>/edit", methods=["GET", "POST"])
@access("billing.edit")
def edit_draft(invoice_id: int):
    """Change a draft's lines; issued invoices are never edited."""
    detail = invoice_queries.invoice_detail(invoice_id)
    if detail.invoice.status != "draft":
        flash("An issued invoice is never edited; void it and issue a new one.", "warning")
        return redirect(url_for("invoices.detail", invoice_id=invoice_id))
    form = DraftForm() if request.method == "POST" else DraftForm.from_lines(detail.lines)
    if form.validate_on_submit():
        if perform(invoice_service.replace_draft_lines, invoice_id, form.values(), form=form) is not REFUSED:
            flash("Draft saved.", "success")
            return redirect(url_for("invoices.detail", invoice_id=invoice_id))
    elif form.is_submitted():
        flash("Please correct the highlighted lines.", "danger")
    return render_template("invoices/draft.html", form=form, customer=detail.customer, invoice=detail.invoice), \
        422 if form.is_submitted() else 200


def _act(invoice_id: int, action, done: str, to_detail: bool = True):
    """Run one posted action on an invoice: commit and say so, or say why not; back to the invoice."""
    form = FlaskForm()
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "danger")
    elif perform(action) is not REFUSED:
        flash(done, "success")
        if not to_detail:
            return redirect(url_for("invoices.index"))
    return redirect(url_for("invoices.detail", invoice_id=invoice_id))


@bp.post("/invoices/<id:invoice_id>/delete")
@access("billing.edit")
def delete_draft(invoice_id: int):
    """Delete a draft (issued invoices are voided, never deleted)."""
    return _act(invoice_id, lambda: invoice_service.delete_draft(invoice_id), "Draft deleted.", to_detail=False)


@bp.post("/invoices/<id:invoice_id>/issue")
@access("billing.edit")
def issue(invoice_id: int):
    """Issue a draft: it gets its number, due date and any credit the customer holds."""
    return _act(invoice_id, lambda: invoice_service.issue(invoice_id, today()), "Invoice issued.")


@bp.post("/invoices/<id:invoice_id>/send")
@access("billing.edit")
def send(invoice_id: int):
    """Email the invoice to the customer now."""
    invoice_service.get_invoice(invoice_id)
    back = redirect(url_for("invoices.detail", invoice_id=invoice_id))
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return back
    sent = perform(_send_now, invoice_id)
    if sent is REFUSED:
        return back
    status, recipient, error = sent
    if status == "sent":
        flash(f"Invoice sent to {recipient}.", "success")
    else:
        flash(f"The invoice could not be sent ({error}); it is {status} in the outbox.", "warning")
    return back


def _send_now(invoice_id: int) -> tuple[str, str, str | None]:
    # The outcome is read inside the unit of work, as the delivery left it: the flash says what this request did.
    notification = delivery.send_invoice(invoice_id)
    return notification.status, notification.recipient, notification.last_error


@bp.post("/invoices/<id:invoice_id>/void")
@access("billing.edit")
def void(invoice_id: int):
    """Void an issued invoice with a reason: a credit note cancels it."""
    invoice_service.get_invoice(invoice_id)
    form = VoidForm()
    if form.validate_on_submit():
        if form.then.data == "rebill":
            done = perform(rebill.void_and_rebill, invoice_id, form.reason.data, today(), form=form)
        else:
            done = perform(lambda: (invoice_service.void(invoice_id, form.reason.data, today()), None), form=form)
        if done is not REFUSED:
            note, new_invoice = done
            flash(_voided_message(note, new_invoice), "success")
            return redirect(url_for("invoices.detail", invoice_id=invoice_id))
    else:
        flash("Say why the invoice is void.", "danger")
    return _render_detail(invoice_id, void_form=form, status=422)


def _voided_message(note, new_invoice) -> Markup:
    """Say what a void issued, with links: the credit note, and the re-billing invoice if there is one."""
    number = escape(note.number)
    if "credit_notes.detail" in current_app.view_functions:
        number = Markup('<a href="{}">{}</a>').format(url_for("credit_notes.detail", credit_note_id=note.id),
                                                      note.number)
    message = Markup("Invoice void: credit note {} for {} cancels it.").format(
        number, money(note.amount_cents, note.currency))
    if new_invoice is None:
        return message + " Its periods are not billed again."
    return message + Markup(' Its periods are re-billed on invoice <a href="{}">{}</a> for {}.').format(
        url_for("invoices.detail", invoice_id=new_invoice.id), new_invoice.number,
        money(new_invoice.total_cents, new_invoice.currency))


@bp.post("/customers/<id:customer_id>/generate-invoice")
@access("billing.edit")
def generate_for_customer(customer_id: int):
    """Bill one customer now for everything due up to today."""
    customer = get_customer(customer_id)
    back = redirect(url_for("customers.detail", customer_id=customer.id))
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return back
    # Nothing due is an answer, not an error: whatever planning touched on the way is rolled back, not kept.
    invoice = perform(billing.generate_invoice_for_customer, customer.id, today(),
                      keep=lambda made: made is not None)
    if invoice is REFUSED:
        return back
    if invoice is None:
        flash("Nothing is due for this customer today: no invoice was made.", "info")
        return back
    flash(f"Invoice {invoice.number} issued.", "success")
    return redirect(url_for("invoices.detail", invoice_id=invoice.id))


@bp.get("/customers/<id:customer_id>/statement")
@access("view")
def statement(customer_id: int):
    """Show a customer's statement: every invoice, payment, credit note and reversal with a running balance."""
    customer = get_customer(customer_id)
    form = StatementForm(request.args)
    if not form.validate():
        flash("Please correct the dates.", "danger")
        return render_template("invoices/statement.html", form=form, customer=customer, statement=None), 400
    end = form.end.data or today()
    try:  # the report window every date keeps (services/platform/bounds.py), before any arithmetic on it
        check_service_dates(today(), start=form.start.data or end, end=end)
    except AppError as exc:
        for name, why in exc.details.items():
            getattr(form, name).errors = [*getattr(form, name).errors, why]
        return render_template("invoices/statement.html", form=form, customer=customer, statement=None), 422
    start = form.start.data or _year_before(end)
    form.start.data, form.end.data = start, end
    return render_template("invoices/statement.html", form=form, customer=customer,
                           statement=invoice_queries.statement(customer.id, start, end))


def _year_before(day: date) -> date:
    """The day after the same date a year earlier: a 12-month window ending on `day`."""
    try:
        return day.replace(year=day.year - 1) + timedelta(days=1)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 1, day=28) + timedelta(days=1)

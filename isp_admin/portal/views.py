"""The subscriber portal's pages: a signed-in customer's balance, documents, payments, usage and requests.

Every page but sign-in and the password link asks portal_login_required (inside access(PUBLIC): staff roles mean
nothing here) and reads through services.portal.queries, which scopes every id to g.customer: another customer's
id is a 404, the same as an id that does not exist.
"""
from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from isp_admin.access import PUBLIC, access
from isp_admin.errors import Invalid, use_error_page
from isp_admin.portal.forms import StatementForm
from isp_admin.portal.guard import keep_staff_out, no_store, portal_login_required
from isp_admin.portal.session import PORTAL_PREFIX
from isp_admin.services.platform.clock import today
from isp_admin.services.portal import plan_changes
from isp_admin.services.portal import queries as portal_queries

bp = Blueprint("portal", __name__, url_prefix="/portal")
bp.before_request(keep_staff_out)
bp.after_request(no_store)
# A 404 (another customer's id, or no such page), 429 or 500 under /portal in the portal's layout, never staff's.
bp.record_once(lambda state: use_error_page(state.app, PORTAL_PREFIX, "portal/error.html"))
PAGE_SIZE = 20
STATEMENT_DAYS = 90


def _page_args() -> dict:
    return {"size": PAGE_SIZE, "after": request.args.get("after"), "before": request.args.get("before")}


@bp.get("/")
@access(PUBLIC)
@portal_login_required
def dashboard():
    """The balance, what is due and when, each service's status and speed, and a way to pay."""
    return render_template("portal/dashboard.html", board=portal_queries.dashboard(g.customer.id, today()),
                           today=today(), requests=plan_changes.customer_requests(g.customer.id, limit=5))


@bp.get("/invoices")
@access(PUBLIC)
@portal_login_required
def invoices():
    """The customer's invoices, newest first."""
    return render_template("portal/invoices.html", page=portal_queries.invoice_page(g.customer.id, **_page_args()))


@bp.get("/invoices/<id:invoice_id>")
@access(PUBLIC)
@portal_login_required
def invoice(invoice_id: int):
    """One invoice: its lines and what has been paid or credited on it."""
    return render_template("portal/invoice.html", **portal_queries.invoice_document(g.customer.id, invoice_id))


@bp.get("/invoices/<id:invoice_id>.pdf")
@access(PUBLIC)
@portal_login_required
def invoice_pdf(invoice_id: int):
    """One invoice as PDF."""
    try:
        content, filename = portal_queries.invoice_pdf_file(g.customer.id, invoice_id)
    except OSError:  # WeasyPrint without its system libraries (pango) cannot render
        flash("The PDF cannot be made right now; this page has everything on it.", "warning")
        return redirect(url_for("portal.invoice", invoice_id=invoice_id))
    return current_app.response_class(content, mimetype="application/pdf",
                                      headers={"Content-Disposition": f'inline; filename="{filename}"'})


@bp.get("/credit-notes")
@access(PUBLIC)
@portal_login_required
def credit_notes():
    """The customer's credit notes, newest first."""
    return render_template("portal/credit_notes.html",
                           page=portal_queries.credit_note_page(g.customer.id, **_page_args()))


@bp.get("/credit-notes/<id:credit_note_id>")
@access(PUBLIC)
@portal_login_required
def credit_note(credit_note_id: int):
    """One credit note and the invoice it corrects."""
    note, corrected = portal_queries.credit_note(g.customer.id, credit_note_id)
    return render_template("portal/credit_note.html", note=note, invoice=corrected)


@bp.get("/payments")
@access(PUBLIC)
@portal_login_required
def payments():
    """The customer's payments, newest first."""
    return render_template("portal/payments.html", page=portal_queries.payment_page(g.customer.id, **_page_args()))


@bp.get("/statement")
@access(PUBLIC)
@portal_login_required
def statement():
    """Invoices, payments and credit notes by date with a running balance, over a bounded period."""
    form = StatementForm(request.args)
    end = today()
    start = end - timedelta(days=STATEMENT_DAYS)
    result, status = None, 200
    if form.validate():
        start, end = form.start.data or start, form.end.data or end
        try:
            result = portal_queries.statement(g.customer.id, start, end)
        except Invalid as exc:
            flash(exc.message, "danger")
            status = 400
    else:
        flash("Please enter the dates as YYYY-MM-DD.", "danger")
        status = 400
    return render_template("portal/statement.html", form=form, statement=result, start=start, end=end), status


@bp.get("/usage")
@access(PUBLIC)
@portal_login_required
def usage():
    """Pick a subscription to see its sessions and usage."""
    return render_template("portal/usage_index.html", subscriptions=portal_queries.subscriptions(g.customer.id))


@bp.get("/usage/<id:subscription_id>")
@access(PUBLIC)
@portal_login_required
def usage_detail(subscription_id: int):
    """One subscription's recent sessions and usage per billing period against its data cap."""
    return render_template("portal/usage.html", view=portal_queries.usage(g.customer.id, subscription_id))


# The pages of sign-in and profile, payment and plan requests add their routes to `bp`; imported last for that.
from isp_admin.portal import account, pay, plans  # noqa: E402, F401

"""Credit note pages: the list (by customer, date, number, reason), the detail, the PDF, and emailing it."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm

from isp_admin.errors import AppError
from isp_admin.services.billing import credit_notes as credit_note_service
from isp_admin.services.billing.pdf import company
from isp_admin.services.messaging.credit_notes import send_credit_note
from isp_admin.web.access import access
from isp_admin.web.credit_notes.forms import KIND_WORDS, CreditNoteFilterForm
from isp_admin.web.templating import page_size
from isp_admin.web.unit_of_work import REFUSED, perform

bp = Blueprint("credit_notes", __name__, url_prefix="/credit-notes")


@bp.get("/")
@access("view")
def index():
    """List credit notes, newest first: filter by customer, issue date and reason; search by number."""
    form = CreditNoteFilterForm(request.args)
    if not form.validate():
        flash("Please correct the filters.", "danger")
        return render_template("credit_notes/index.html", form=form, page=None, filtered=True,
                               kinds=KIND_WORDS), 400
    page = credit_note_service.list_credit_notes(**form.filters(), size=page_size(),
                                                 after=request.args.get("after"), before=request.args.get("before"))
    return render_template("credit_notes/index.html", form=form, page=page, filtered=form.is_filtered(),
                           kinds=KIND_WORDS)


@bp.get("/<id:credit_note_id>")
@access("view")
def detail(credit_note_id: int):
    """Show a credit note: what it credits, its amounts, where its credit went, and its history."""
    return render_template("credit_notes/detail.html", d=credit_note_service.credit_note_detail(credit_note_id),
                           kinds=KIND_WORDS, company=company(), action_form=FlaskForm())


@bp.get("/<id:credit_note_id>.pdf")
@access("view")
def pdf(credit_note_id: int):
    """Download the credit note as PDF."""
    note = credit_note_service.get_credit_note(credit_note_id)
    try:
        content = credit_note_service.render_credit_note_pdf(note.id)
    except OSError:  # WeasyPrint without its system libraries (pango) cannot render
        flash("This server cannot render PDFs (missing system libraries).", "warning")
    except AppError as exc:
        flash(exc.message, "warning")
    else:
        return current_app.response_class(content, mimetype="application/pdf", headers={
            "Content-Disposition": f'inline; filename="{credit_note_service.pdf_filename(note)}"'})
    return redirect(url_for("credit_notes.detail", credit_note_id=note.id))


@bp.post("/<id:credit_note_id>/send")
@access("billing.edit")
def send(credit_note_id: int):
    """Email the credit note, its PDF attached, to the customer now."""
    number = credit_note_service.get_credit_note(credit_note_id).number
    back = redirect(url_for("credit_notes.detail", credit_note_id=credit_note_id))
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return back
    sent = perform(send_credit_note, credit_note_id)
    if sent is not REFUSED:
        if sent.to_outbox:  # `make run` without MAIL_URL: nothing left the machine, and staff should know it
            flash(f"Credit note {number} for {sent.recipient} written to the development outbox "
                  "(no mail server is set: MAIL_URL).", "info")
        else:
            flash(f"Credit note {number} sent to {sent.recipient}.", "success")
    return back

"""Email a credit note to its customer, its PDF attached, and audit that it went.

Sent at once, not through the outbox: the outbox keys one email per invoice and kind, and a credit note is sent
when a person asks. The audit event is flushed before the mail leaves, so a write the database refuses stops the
mail; a mail that cannot leave raises, and the unit of work rolls the event back: the trail says "sent" only when
it was.
"""
from __future__ import annotations

import smtplib
from dataclasses import dataclass

from flask import current_app, render_template

from isp_admin.errors import AppError, BusinessRuleViolation
from isp_admin.extensions import db
from isp_admin.services.billing.credit_notes import credit_note_detail, pdf_filename, render_credit_note_pdf
from isp_admin.services.billing.pdf import company
from isp_admin.services.messaging.mail import send_email
from isp_admin.services.platform import audit


class MailUnavailable(AppError):
    """The mail server refused the message or could not be reached; nothing was recorded."""

    status = 503
    code = "EXTERNAL_SERVICE_ERROR"


@dataclass(frozen=True)
class SentMail:
    """Where a credit note went: the address, and whether it went to the development outbox instead of SMTP."""

    recipient: str
    to_outbox: bool


def send_credit_note(credit_note_id: int) -> SentMail:
    """Email the credit note to its customer with its PDF; raise when it cannot be sent."""
    detail = credit_note_detail(credit_note_id, with_history=False)
    note, customer = detail.note, detail.customer
    if not customer.email:
        raise BusinessRuleViolation(f"Customer {customer.account_number} has no email address; add one, then send "
                                    "again.", {"email": "Required to send a credit note."})
    try:
        pdf = render_credit_note_pdf(note.id)
    except OSError:  # WeasyPrint without its system libraries (pango) cannot render
        raise BusinessRuleViolation("This server cannot render PDFs (missing system libraries).") from None
    text = render_template("credit_notes/email.txt", d=detail, note=note, customer=customer, company=company())
    audit.record("credit_note.send", note, after={"recipient": customer.email, "number": note.number},
                 customer_id=customer.id)
    db.session.flush()
    try:
        send_email(customer.email, f"Credit note {note.number}", text,
                   [(pdf_filename(note), "application/pdf", pdf)])
    except (OSError, smtplib.SMTPException) as exc:
        raise MailUnavailable(f"The credit note could not be sent ({type(exc).__name__}: {exc}).") from None
    return SentMail(customer.email, to_outbox=not current_app.config.get("MAIL_URL"))

"""The invoice document: its template context (shared with the web page) and its PDF, via WeasyPrint."""
from __future__ import annotations

from pathlib import Path

from flask import current_app, render_template
from sqlalchemy import select

from isp_admin.errors import BusinessRuleViolation, NotFound
from isp_admin.extensions import db
from isp_admin.models import CreditAllocation, CreditNote, Customer, Invoice, InvoiceLine, Payment, PaymentAllocation


def company() -> dict:
    """The issuing company from COMPANY_NAME, COMPANY_ADDRESS (lines split by newlines), COMPANY_TAX_ID/EMAIL."""
    config = current_app.config
    return {"name": config["COMPANY_NAME"], "address": config["COMPANY_ADDRESS"],
            "tax_id": config["COMPANY_TAX_ID"], "email": config["COMPANY_EMAIL"]}


def document_context(invoice_id: int) -> dict:
    """Everything templates/invoices/_document.html needs, in a fixed number of queries."""
    invoice = db.session.get(Invoice, invoice_id)
    if invoice is None:
        raise NotFound("No such invoice.")
    customer = db.session.get(Customer, invoice.customer_id)
    lines = list(db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice_id)
                                    .order_by(InvoiceLine.id)))
    payments = [tuple(row) for row in db.session.execute(
        select(PaymentAllocation, Payment).join(Payment, Payment.id == PaymentAllocation.payment_id)
        .where(PaymentAllocation.invoice_id == invoice_id, PaymentAllocation.reversed_at.is_(None))
        .order_by(PaymentAllocation.id))]
    credits = [tuple(row) for row in db.session.execute(
        select(CreditAllocation, CreditNote).join(CreditNote, CreditNote.id == CreditAllocation.credit_note_id)
        .where(CreditAllocation.invoice_id == invoice_id, CreditAllocation.reversed_at.is_(None))
        .order_by(CreditAllocation.id))]
    return {"invoice": invoice, "lines": lines, "customer": customer, "payments": payments, "credits": credits,
            "company": company()}


def pdf_filename(invoice: Invoice) -> str:
    """The attachment's file name: the invoice number, e.g. INV-2026-000123.pdf."""
    return f"{invoice.number or f'draft-{invoice.id}'}.pdf"


def render_invoice_html(invoice_id: int) -> str:
    """Render the standalone invoice page that the PDF is made from."""
    return render_template("invoices/pdf.html", **document_context(invoice_id))


def render_invoice_pdf(invoice_id: int) -> bytes:
    """Render an issued invoice as PDF bytes (WeasyPrint; its stylesheet is read from static/, no network)."""
    from weasyprint import CSS, HTML

    context = document_context(invoice_id)
    if context["invoice"].status == "draft":
        raise BusinessRuleViolation("A draft has no number yet; issue it before making its PDF.")
    html = render_template("invoices/pdf.html", **context)
    stylesheet = Path(current_app.static_folder) / "css" / "invoice.css"
    return HTML(string=html, base_url=str(stylesheet.parent)).write_pdf(
        stylesheets=[CSS(filename=str(stylesheet))])

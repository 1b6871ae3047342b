"""Credit notes as documents: their list, their page (what they credit, where the credit went) and their PDF.

Credit notes are issued by invoices.py (a void, the unused days of a cancellation or plan change); nothing here
writes. Like the invoice pages, every read selects what it shows in a fixed number of statements.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from flask import current_app, render_template
from sqlalchemy import select

from isp_admin.database import escape_like
from isp_admin.errors import NotFound
from isp_admin.extensions import db
from isp_admin.models import CreditAllocation, CreditNote, Customer, Invoice, InvoiceLine, Plan, Subscription
from isp_admin.models.invoices import CREDIT_NOTE_KINDS
from isp_admin.services.billing.pdf import company
from isp_admin.services.billing.queries import customer_matches
from isp_admin.services.platform.audit import entity_history
from isp_admin.services.platform.lookups import number_condition, parse_number
from isp_admin.services.platform.pagination import Page, keyset_by_id

PREFIX = "CN"  # the document sequence credit notes are numbered from (invoices._credit_note)
KINDS = CREDIT_NOTE_KINDS  # what a credit note is for, as the list's filter offers it


def list_credit_notes(*, customer: str | None = None, number: str | None = None, kind: str | None = None,
                      issued_from: date | None = None, issued_to: date | None = None, size: int = 50,
                      after: str | None = None, before: str | None = None) -> Page:
    """Return one page of credit notes (newest first) matching the filters, with a capped count: two queries."""
    n, c, i = CreditNote.__table__.c, Customer.__table__.c, Invoice.__table__.c
    conditions = []
    if customer and customer.strip():
        conditions.append(customer_matches(n.customer_id, customer))
    if number and number.strip():
        by_number = number_condition(n.number, parse_number(number), PREFIX)
        # Not shaped like a number (a fragment such as "0012"): a substring, as the invoice list's search does.
        conditions.append(by_number if by_number is not None
                          else n.number.ilike(f"%{escape_like(number.strip())}%", escape="\\"))
    if kind:
        conditions.append(n.kind == kind)
    if issued_from is not None:
        conditions.append(n.issue_date >= issued_from)
    if issued_to is not None:
        conditions.append(n.issue_date <= issued_to)
    stmt = (select(n.id, n.number, n.kind, n.reason, n.issue_date, n.currency, n.subtotal_cents, n.tax_cents,
                   n.amount_cents, n.customer_id, c.name.label("customer_name"), c.account_number,
                   n.invoice_id, i.number.label("invoice_number"))
            .join(Customer.__table__, c.id == n.customer_id)
            .outerjoin(Invoice.__table__, i.id == n.invoice_id)
            .where(*conditions))
    return keyset_by_id(stmt, n.id, size, after, before)


@dataclass
class CreditNoteDetail:
    """A credit note with its customer, what it credits and where its money went: a fixed number of queries."""

    note: CreditNote
    customer: Customer
    invoice: Invoice | None  # the invoice a void credits
    subscription_id: int | None
    pppoe_username: str | None  # the subscription whose unused days a cancellation or plan change credits
    plan_name: str | None
    lines: list[InvoiceLine]  # the credited invoice's lines (a void credits each of them)
    allocations: list[tuple[CreditAllocation, str, str]]  # (allocation, invoice number, invoice status)
    history: list = field(default_factory=list)

    @property
    def applied_cents(self) -> int:
        """What of the note is applied to invoices now."""
        return sum(a.amount_cents for a, _, _ in self.allocations if a.reversed_at is None)

    @property
    def unapplied_cents(self) -> int:
        """What the customer still holds from this note, to be applied to their next invoice."""
        return self.note.amount_cents - self.applied_cents


def credit_note_detail(credit_note_id: int, *, with_history: bool = True) -> CreditNoteDetail:
    """Return a credit note with everything its page and its PDF show."""
    s, p = Subscription.__table__.c, Plan.__table__.c
    row = db.session.execute(
        select(CreditNote, Customer, Invoice, s.pppoe_username, p.name)
        .join(Customer, Customer.id == CreditNote.customer_id)
        .outerjoin(Invoice, Invoice.id == CreditNote.invoice_id)
        .outerjoin(Subscription.__table__, s.id == CreditNote.subscription_id)
        .outerjoin(Plan.__table__, p.id == s.plan_id)
        .where(CreditNote.id == credit_note_id)).first()
    if row is None:
        raise NotFound("No such credit note.")
    note, customer, invoice, pppoe_username, plan_name = row
    lines = []
    if note.kind == "void" and invoice is not None:
        lines = list(db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id)
                                        .order_by(InvoiceLine.id)))
    allocations = [tuple(r) for r in db.session.execute(
        select(CreditAllocation, Invoice.number, Invoice.status)
        .join(Invoice, Invoice.id == CreditAllocation.invoice_id)
        .where(CreditAllocation.credit_note_id == note.id).order_by(CreditAllocation.id))]
    history = entity_history("credit_notes", note.id) if with_history else []
    return CreditNoteDetail(note, customer, invoice, note.subscription_id, pppoe_username, plan_name, lines,
                            allocations, history)


def get_credit_note(credit_note_id: int) -> CreditNote:
    """Return a credit note or raise NotFound."""
    note = db.session.get(CreditNote, credit_note_id)
    if note is None:
        raise NotFound("No such credit note.")
    return note


def pdf_filename(note: CreditNote) -> str:
    """The attachment's file name: the credit note's number, e.g. CN-2026-000007.pdf."""
    return f"{note.number}.pdf"


def document_context(credit_note_id: int) -> dict:
    """Everything templates/credit_notes/_document.html needs."""
    return {"d": credit_note_detail(credit_note_id, with_history=False), "company": company()}


def render_credit_note_pdf(credit_note_id: int) -> bytes:
    """Render a credit note as PDF bytes, with the invoice's print stylesheet (WeasyPrint; no network)."""
    from weasyprint import CSS, HTML

    html = render_template("credit_notes/pdf.html", **document_context(credit_note_id))
    stylesheet = Path(current_app.static_folder) / "css" / "invoice.css"
    return HTML(string=html, base_url=str(stylesheet.parent)).write_pdf(stylesheets=[CSS(filename=str(stylesheet))])

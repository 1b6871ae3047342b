"""What a signed-in customer reads in the portal, always scoped to their own customer id.

Every function takes the customer's id first and answers NotFound for a row of anyone else's, exactly as for a
row that does not exist: the portal's pages never learn, or show, that another customer's id is real.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from sqlalchemy import select

from isp_admin.errors import Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import CreditNote, Invoice, Payment, PaymentAttempt, Plan, Subscription
from isp_admin.services.billing import pdf as invoice_pdf
from isp_admin.services.billing import queries as billing_queries
from isp_admin.services.network import sessions as network_sessions
from isp_admin.services.platform.pagination import Page, keyset_by_id

MAX_PAGE = 50
MAX_STATEMENT_DAYS = 366
SUBSCRIPTIONS_SHOWN = 20


@dataclass
class Dashboard:
    """The portal's first page: the balance, what is due next and when, and each service's state."""

    owed_cents: int
    overdue_cents: int
    credit_cents: int
    next_due: object  # (balance_cents, due_date) of the open invoice due first, or None
    subscriptions: list
    online: dict

    @property
    def net_cents(self) -> int:
        """Owed minus credit: positive means the customer owes money."""
        return self.owed_cents - self.credit_cents


def _subscriptions(customer_id: int, *conditions):
    s, p = Subscription.__table__.c, Plan.__table__.c
    return (select(s.id, s.status, s.suspension_reason, s.start_date, s.end_date, s.next_bill_date, s.plan_id,
                   p.name.label("plan_name"), p.download_mbps, p.upload_mbps, p.data_cap_gb)
            .join(Plan.__table__, p.id == s.plan_id).where(s.customer_id == customer_id, *conditions))


def subscriptions(customer_id: int) -> list:
    """The customer's subscriptions with plan name, speeds and cap (live first, newest first)."""
    s = Subscription.__table__.c
    return db.session.execute(_subscriptions(customer_id).order_by((s.status == "cancelled"), s.id.desc())
                              .limit(SUBSCRIPTIONS_SHOWN)).all()


def dashboard(customer_id: int, today: date) -> Dashboard:
    """The balance, the next amount due and its date, and the subscriptions with whether each is online now."""
    overview = billing_queries.account_overview(customer_id, today, recent=1)
    due = db.session.execute(
        select(Invoice.balance_cents, Invoice.due_date).where(Invoice.customer_id == customer_id, Invoice.is_open)
        .order_by(Invoice.due_date, Invoice.id).limit(1)).first()
    subs = subscriptions(customer_id)
    return Dashboard(overview.owed_cents, overview.overdue_cents, overview.credit_cents, due, subs,
                     network_sessions.online_counts([s.id for s in subs if s.status != "cancelled"]))


def _size(size: int) -> int:
    return min(max(size, 1), MAX_PAGE)


def invoice_page(customer_id: int, *, size: int, after: str | None = None, before: str | None = None) -> Page:
    """One page of the customer's issued invoices, newest first."""
    i = Invoice.__table__.c
    stmt = (select(i.id, i.number, i.status, i.issue_date, i.due_date, i.currency, i.total_cents,
                   Invoice.balance_cents.label("balance_cents"))
            .where(i.customer_id == customer_id, i.status != "draft"))
    return keyset_by_id(stmt, i.id, _size(size), after, before)


def _invoice(customer_id: int, invoice_id: int) -> Invoice:
    invoice = db.session.get(Invoice, invoice_id)
    if invoice is None or invoice.customer_id != customer_id or invoice.status == "draft":
        raise NotFound("No such invoice.")
    return invoice


def invoice_document(customer_id: int, invoice_id: int) -> dict:
    """The invoice page's context (lines, payments and credits applied) for one of the customer's invoices."""
    return invoice_pdf.document_context(_invoice(customer_id, invoice_id).id)


def invoice_pdf_file(customer_id: int, invoice_id: int) -> tuple[bytes, str]:
    """The PDF of one of the customer's invoices and its file name."""
    invoice = _invoice(customer_id, invoice_id)
    return invoice_pdf.render_invoice_pdf(invoice.id), invoice_pdf.pdf_filename(invoice)


def payable_invoice(customer_id: int, invoice_id: int) -> Invoice:
    """One of the customer's invoices that still has something to pay."""
    invoice = _invoice(customer_id, invoice_id)
    if not invoice.is_open:
        raise NotFound("No such invoice to pay.")
    return invoice


def open_invoices(customer_id: int) -> list:
    """(id, number, balance, due date) of the customer's unpaid invoices, oldest due first."""
    return billing_queries.open_invoice_choices(customer_id)


def credit_note_page(customer_id: int, *, size: int, after: str | None = None, before: str | None = None) -> Page:
    """One page of the customer's credit notes, newest first."""
    n, i = CreditNote.__table__.c, Invoice.__table__.c
    stmt = (select(n.id, n.number, n.kind, n.reason, n.issue_date, n.currency, n.amount_cents,
                   i.number.label("invoice_number"))
            .outerjoin(Invoice.__table__, i.id == n.invoice_id).where(n.customer_id == customer_id))
    return keyset_by_id(stmt, n.id, _size(size), after, before)


def credit_note(customer_id: int, credit_note_id: int) -> tuple[CreditNote, Invoice | None]:
    """One of the customer's credit notes and the invoice it corrects (if any)."""
    note = db.session.get(CreditNote, credit_note_id)
    if note is None or note.customer_id != customer_id:
        raise NotFound("No such credit note.")
    return note, db.session.get(Invoice, note.invoice_id) if note.invoice_id else None


def payment_page(customer_id: int, *, size: int, after: str | None = None, before: str | None = None) -> Page:
    """One page of the customer's payments, newest first."""
    p = Payment.__table__.c
    stmt = (select(p.id, p.amount_cents, p.currency, p.method, p.reference, p.provider, p.received_on, p.status)
            .where(p.customer_id == customer_id))
    return keyset_by_id(stmt, p.id, _size(size), after, before)


def statement(customer_id: int, start: date, end: date) -> billing_queries.Statement:
    """The customer's statement over at most MAX_STATEMENT_DAYS days."""
    if end < start:
        raise Invalid("The period ends before it starts.", {"end": "On or after the start."})
    if end - start > timedelta(days=MAX_STATEMENT_DAYS):
        raise Invalid(f"Choose a period of at most {MAX_STATEMENT_DAYS} days.", {"start": "Too long a period."})
    return billing_queries.statement(customer_id, start, end)


@dataclass
class UsageView:
    """One subscription's sessions and usage per billing period, for its owner."""

    subscription: object
    sessions: list
    usage: list
    online: bool


def usage(customer_id: int, subscription_id: int) -> UsageView:
    """Recent sessions and usage per period (against the plan's cap) of one of the customer's subscriptions."""
    sub = db.session.execute(_subscriptions(customer_id, Subscription.id == subscription_id)).first()
    if sub is None:
        raise NotFound("No such subscription.")
    sessions = network_sessions.recent_sessions(sub.id)
    periods, _ = network_sessions.usage_periods(sub.id)
    return UsageView(sub, sessions, periods, any(s.open for s in sessions))


def attempt(customer_id: int, public_id: str) -> tuple[PaymentAttempt, Payment | None]:
    """One of the customer's payment attempts, by its public id, and the payment it made (once it landed)."""
    row = db.session.scalar(select(PaymentAttempt).where(PaymentAttempt.public_id == (public_id or "")[:40]))
    if row is None or row.customer_id != customer_id:
        raise NotFound("No such payment.")
    return row, db.session.get(Payment, row.payment_id) if row.payment_id else None

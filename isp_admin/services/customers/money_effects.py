"""What a subscription change does to the customer's money: the invoice and credit note it issued, or in a
preview (a dry run of the change itself, rolled back) would issue."""
from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import CreditNote, Invoice, InvoiceLine, Subscription


@dataclass(frozen=True)
class MoneyDocument:
    """An invoice or credit note a change issued; in a preview, one it would issue (no id or number yet)."""

    kind: str  # "invoice" or "credit_note"
    id: int | None
    number: str | None
    subtotal_cents: int
    tax_cents: int
    total_cents: int
    currency: str
    description: str


@dataclass(frozen=True)
class Outcome:
    """What a change did to a subscription: its plan afterwards and the money documents it issued."""

    subscription: Subscription | None  # None in a preview: that row was rolled back
    plan_name: str
    documents: tuple[MoneyDocument, ...]

    @property
    def amounts(self) -> str:
        """The documents' kinds and amounts, to tell whether a confirmed change issues what its preview showed."""
        return ",".join(f"{d.kind}:{d.subtotal_cents}:{d.tax_cents}" for d in self.documents)


def outcome_of(sub: Subscription, plan_name: str, invoice: Invoice | None, note: CreditNote | None) -> Outcome:
    """Describe what a change issued, in plain values that outlive the transaction."""
    documents = []
    if invoice is not None:
        line = db.session.scalar(select(InvoiceLine.description).where(InvoiceLine.invoice_id == invoice.id)
                                 .order_by(InvoiceLine.id).limit(1)) or ""
        documents.append(MoneyDocument("invoice", invoice.id, invoice.number, invoice.subtotal_cents,
                                       invoice.tax_cents, invoice.total_cents, invoice.currency, line))
    if note is not None:
        documents.append(MoneyDocument("credit_note", note.id, note.number, note.subtotal_cents, note.tax_cents,
                                       note.amount_cents, note.currency, note.reason))
    return Outcome(sub, plan_name, tuple(documents))


def dry_run(action, *args) -> Outcome:
    """Run a change in a savepoint, read what it issued, and roll it back: the preview is the change itself."""
    savepoint = db.session.begin_nested()
    try:
        outcome = action(*args)
        # Plain values, read before the rollback forgets the rows they come from.
        documents = tuple(replace(d, id=None, number=None) for d in outcome.documents)
    finally:
        savepoint.rollback()
    return Outcome(None, outcome.plan_name, documents)

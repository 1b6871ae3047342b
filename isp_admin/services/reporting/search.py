"""One search box for everything staff look up: customers, invoice and credit-note numbers, payment references.

Each kind is one bounded query (LIMIT, newest or closest first). Numbers are matched whole or by their beginning
on their unique indexes (services/platform/lookups.py), never by substring; customers with the customer list's own
search, so the box finds what the list finds.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import or_, select

from isp_admin.errors import Invalid
from isp_admin.extensions import db
from isp_admin.models import CreditNote, Customer, Invoice, Payment
from isp_admin.services.customers.accounts import search_condition
from isp_admin.services.platform.lookups import MAX_QUERY_LENGTH, number_condition, parse_number, starts_with

PER_KIND = 10
MIN_REFERENCE_PREFIX = 3  # a payment reference is found by its beginning from this many characters on


@dataclass
class Hits:
    """The first rows of one kind, and whether there are more than those."""

    rows: list = field(default_factory=list)
    more: bool = False


@dataclass
class SearchResults:
    """What one search found, grouped by kind."""

    q: str
    customers: Hits = field(default_factory=Hits)
    invoices: Hits = field(default_factory=Hits)
    credit_notes: Hits = field(default_factory=Hits)
    payments: Hits = field(default_factory=Hits)

    @property
    def count(self) -> int:
        """How many rows were found (the first PER_KIND of each kind)."""
        return sum(len(h.rows) for h in (self.customers, self.invoices, self.credit_notes, self.payments))

    @property
    def only_document(self) -> tuple[str, int] | None:
        """(kind, id) when the search found exactly one document and nothing else: the page to go to."""
        if self.count != 1 or self.customers.rows:
            return None
        for kind in ("invoices", "credit_notes", "payments"):
            rows = getattr(self, kind).rows
            if rows:
                return kind, rows[0].id
        return None


def _hits(stmt, limit: int) -> Hits:
    rows = db.session.execute(stmt.limit(limit + 1)).all()
    return Hits(rows[:limit], len(rows) > limit)


def clean_query(q: str | None) -> str:
    """Return the search text trimmed, or raise Invalid for text no search can hold."""
    q = (q or "").strip()
    if "\x00" in q:
        raise Invalid("The search is not valid.", {"q": "Contains a NUL character."})
    if len(q) > MAX_QUERY_LENGTH:
        raise Invalid("The search is too long.", {"q": f"At most {MAX_QUERY_LENGTH} characters."})
    return q


def search(q: str | None, limit: int = PER_KIND) -> SearchResults:
    """Find customers, invoices, credit notes and payments matching `q`: at most one query per kind."""
    q = clean_query(q)
    results = SearchResults(q)
    if not q:
        return results
    c, i, n, p = (Customer.__table__.c, Invoice.__table__.c, CreditNote.__table__.c, Payment.__table__.c)
    results.customers = _hits(
        select(c.id, c.name, c.account_number, c.email, c.status).where(search_condition(q))
        .order_by(c.name, c.id), limit)
    number = parse_number(q)
    by_invoice = number_condition(i.number, number, "INV")
    if by_invoice is not None:
        results.invoices = _hits(
            select(i.id, i.number, i.status, i.issue_date, i.currency, i.total_cents, i.customer_id,
                   c.name.label("customer_name"))
            .join(Customer.__table__, c.id == i.customer_id).where(by_invoice).order_by(i.number.desc()), limit)
    by_note = number_condition(n.number, number, "CN")
    if by_note is not None:
        results.credit_notes = _hits(
            select(n.id, n.number, n.kind, n.issue_date, n.currency, n.amount_cents, n.customer_id,
                   c.name.label("customer_name"))
            .join(Customer.__table__, c.id == n.customer_id).where(by_note).order_by(n.number.desc()), limit)
    # References are stored as the bank or provider wrote them, mostly upper-case; staff type them either way.
    references = [p.reference.in_({q, q.upper()}), p.provider_ref == q]
    if len(q) >= MIN_REFERENCE_PREFIX:
        references.append(starts_with(p.reference, q))
    results.payments = _hits(
        select(p.id, p.reference, p.provider, p.provider_ref, p.method, p.status, p.received_on, p.currency,
               p.amount_cents, p.customer_id, c.name.label("customer_name"))
        .join(Customer.__table__, c.id == p.customer_id).where(or_(*references)).order_by(p.id.desc()), limit)
    return results

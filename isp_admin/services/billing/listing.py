"""The staff's invoice and payment lists: their filters, column sort keys, numbered pages, the CSV export of
everything the filter matches, and the ids a bulk action selects.

A page, the export and a bulk selection are one filter read three ways, so "what the list shows" is what gets
exported or acted on. Pages select only the columns they show and page by keyset (a numbered page skips at most
MAX_OFFSET rows); the export streams its rows from one statement (a server-side cursor on PostgreSQL).
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

from sqlalchemy import select

from isp_admin.database import escape_like
from isp_admin.errors import Invalid
from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, Payment
from isp_admin.models.invoices import OPEN_STATUSES, invoice_balance
from isp_admin.services.billing.queries import FULL_NUMBER, customer_matches
from isp_admin.services.platform.csv_export import money
from isp_admin.services.platform.pagination import Page, keyset_by_id

# Column sort keys (a leading "-" sorts descending) and the indexed column each walks, ties broken by id.
INVOICE_SORTS = {"number": "id", "issued": "issue_date"}
PAYMENT_SORTS = {"id": "id", "received": "received_on"}
INVOICE_DEFAULT_SORT = "-number"
PAYMENT_DEFAULT_SORT = "-id"
# Days past due (today - due date) of unpaid issued invoices, as the aging report buckets them.
OVERDUE_RANGES = {"1-30": (1, 30), "31-60": (31, 60), "61-90": (61, 90), "91-": (91, None)}
EXPORT_BATCH = 500


def sort_keys(sorts: dict) -> list[str]:
    """Every sort value a list accepts: each key ascending, then descending."""
    return [*sorts, *(f"-{key}" for key in sorts)]


def _ordering(columns, sorts: dict, sort: str):
    name = sort.lstrip("-")
    if name not in sorts or sort.count("-") > 1:
        raise Invalid("Unknown sort order.", {"sort": f"Choose one of {', '.join(sort_keys(sorts))}."})
    return columns[sorts[name]], sort.startswith("-")


def _stream(stmt, shape) -> Iterator[list]:
    """Yield each row of `stmt` shaped for CSV, fetched in batches (a server-side cursor on PostgreSQL)."""
    result = db.session.execute(stmt.execution_options(yield_per=EXPORT_BATCH))
    try:
        for row in result:
            yield shape(row)
    finally:
        result.close()  # a download abandoned half-way frees its cursor


# --- invoices ---------------------------------------------------------------------------------------------------

def invoice_conditions(filters: dict, today: date) -> list:
    """Return the SQL conditions of the invoice list's filters (`overdue_days` counts back from `today`)."""
    i = Invoice.__table__.c
    conditions = []
    if filters.get("status"):
        conditions.append(i.status == filters["status"])
    if filters.get("customer"):
        conditions.append(customer_matches(i.customer_id, filters["customer"]))
    number = (filters.get("number") or "").strip()
    if number:
        if FULL_NUMBER.fullmatch(number.upper()):
            conditions.append(i.number == number.upper())  # the unique index answers a whole number at once
        else:
            conditions.append(i.number.ilike(f"%{escape_like(number)}%", escape="\\"))
    for column, low, high in ((i.issue_date, "issued_from", "issued_to"), (i.due_date, "due_from", "due_to"),
                              (i.total_cents, "min_total", "max_total")):
        if filters.get(low) is not None:
            conditions.append(column >= filters[low])
        if filters.get(high) is not None:
            conditions.append(column <= filters[high])
    overdue = filters.get("overdue_days")
    if overdue:
        if overdue not in OVERDUE_RANGES:
            raise Invalid("Unknown range of days past due.", {"overdue_days": f"One of {', '.join(OVERDUE_RANGES)}."})
        oldest, newest = OVERDUE_RANGES[overdue]
        # Compared as dates, so the (status, due_date) index serves it.
        conditions += [i.status.in_(OPEN_STATUSES), invoice_balance(i) > 0, i.due_date <= today - timedelta(oldest)]
        if newest is not None:
            conditions.append(i.due_date >= today - timedelta(newest))
    return conditions


def _invoice_statement(conditions: list):
    i, c = Invoice.__table__.c, Customer.__table__.c
    return (select(i.id, i.number, i.status, i.issue_date, i.due_date, i.currency, i.subtotal_cents, i.tax_cents,
                   i.total_cents, i.amount_paid_cents, i.credit_applied_cents,
                   invoice_balance(i).label("balance_cents"), i.sent_at, i.paid_at, i.voided_at,
                   i.customer_id, c.name.label("customer_name"), c.account_number)
            .join(Customer.__table__, c.id == i.customer_id).where(*conditions))


def invoice_page(filters: dict, today: date, *, sort: str = INVOICE_DEFAULT_SORT, size: int = 50, offset: int = 0,
                 after: str | None = None, before: str | None = None) -> Page:
    """Return one page of the filtered invoices in `sort` order, with a capped count: two queries."""
    sort_col, descending = _ordering(Invoice.__table__.c, INVOICE_SORTS, sort)
    stmt = _invoice_statement(invoice_conditions(filters, today))
    return keyset_by_id(stmt, Invoice.__table__.c.id, size, after, before, offset=offset, sort_col=sort_col,
                        descending=descending)


INVOICE_CSV_HEADER = ["Number", "Status", "Account", "Customer", "Issued", "Due", "Currency", "Subtotal", "Tax",
                      "Total", "Paid", "Credit applied", "Balance", "Sent at", "Paid at", "Voided at", "Invoice id"]


def invoice_csv_rows(filters: dict, today: date, *, sort: str = INVOICE_DEFAULT_SORT,
                     only: list[int] | None = None) -> Iterator[list]:
    """Yield every filtered invoice (only the ids in `only`, when given) in the list's order, for CSV."""
    i = Invoice.__table__.c
    sort_col, descending = _ordering(i, INVOICE_SORTS, sort)
    conditions = invoice_conditions(filters, today)
    if only is not None:
        conditions.append(i.id.in_(only))
    order = (sort_col.desc(), i.id.desc()) if descending else (sort_col.asc(), i.id.asc())
    return _stream(_invoice_statement(conditions).order_by(*order), lambda r: [
        r.number, r.status, r.account_number, r.customer_name, r.issue_date, r.due_date, r.currency,
        money(r.subtotal_cents), money(r.tax_cents), money(r.total_cents), money(r.amount_paid_cents),
        money(r.credit_applied_cents), money(r.balance_cents), r.sent_at, r.paid_at, r.voided_at, r.id])


def invoice_ids(filters: dict, today: date, *, only: list[int] | None = None, limit: int) -> list[int]:
    """Return the ids of the filtered invoices (of `only`, when given), customer by customer, at most `limit`."""
    i = Invoice.__table__.c
    conditions = invoice_conditions(filters, today)
    if only is not None:
        conditions.append(i.id.in_(only))
    # Customer by customer: a bulk action locks customers in the order the nightly run does.
    return list(db.session.scalars(select(i.id).where(*conditions).order_by(i.customer_id, i.id).limit(limit)))


# --- payments ---------------------------------------------------------------------------------------------------

def payment_conditions(filters: dict) -> list:
    """Return the SQL conditions of the payment list's filters."""
    p = Payment.__table__.c
    conditions = []
    if filters.get("customer"):
        conditions.append(customer_matches(p.customer_id, filters["customer"]))
    for name in ("method", "status"):
        if filters.get(name):
            conditions.append(p[name] == filters[name])
    if filters.get("received_from") is not None:
        conditions.append(p.received_on >= filters["received_from"])
    if filters.get("received_to") is not None:
        conditions.append(p.received_on <= filters["received_to"])
    return conditions


def _payment_statement(conditions: list):
    p, c = Payment.__table__.c, Customer.__table__.c
    return (select(p.id, p.amount_cents, p.currency, p.method, p.reference, p.provider, p.provider_ref,
                   p.received_on, p.status, p.recorded_by, p.reversed_at, p.reversal_reason, p.created_at,
                   p.customer_id, c.name.label("customer_name"), c.account_number)
            .join(Customer.__table__, c.id == p.customer_id).where(*conditions))


def payment_page(filters: dict, *, sort: str = PAYMENT_DEFAULT_SORT, size: int = 50, offset: int = 0,
                 after: str | None = None, before: str | None = None) -> Page:
    """Return one page of the filtered payments in `sort` order, with a capped count: two queries."""
    sort_col, descending = _ordering(Payment.__table__.c, PAYMENT_SORTS, sort)
    return keyset_by_id(_payment_statement(payment_conditions(filters)), Payment.__table__.c.id, size, after,
                        before, offset=offset, sort_col=sort_col, descending=descending)


PAYMENT_CSV_HEADER = ["Payment id", "Received", "Account", "Customer", "Method", "Provider", "Reference",
                      "Provider reference", "Status", "Currency", "Amount", "Recorded by", "Reversed at",
                      "Reversal reason"]


def payment_csv_rows(filters: dict, *, sort: str = PAYMENT_DEFAULT_SORT,
                     only: list[int] | None = None) -> Iterator[list]:
    """Yield every filtered payment (only the ids in `only`, when given) in the list's order, for CSV."""
    p = Payment.__table__.c
    sort_col, descending = _ordering(p, PAYMENT_SORTS, sort)
    conditions = payment_conditions(filters)
    if only is not None:
        conditions.append(p.id.in_(only))
    order = (sort_col.desc(), p.id.desc()) if descending else (sort_col.asc(), p.id.asc())
    return _stream(_payment_statement(conditions).order_by(*order), lambda r: [
        r.id, r.received_on, r.account_number, r.customer_name, r.method, r.provider, r.reference, r.provider_ref,
        r.status, r.currency, money(r.amount_cents), r.recorded_by, r.reversed_at, r.reversal_reason])


def payment_ids(filters: dict, *, only: list[int] | None = None, limit: int) -> list[int]:
    """Return the ids of the filtered payments (of `only`, when given), at most `limit`."""
    p = Payment.__table__.c
    conditions = payment_conditions(filters)
    if only is not None:
        conditions.append(p.id.in_(only))
    return list(db.session.scalars(select(p.id).where(*conditions).order_by(p.customer_id, p.id).limit(limit)))

"""Importing payments from a bank statement: each line matched to a customer (account number) or an invoice (its
number), then recorded through the payment service as the Record payment form would. An unmatched line is an error.

Each line gets an idempotency key made from its own values (and how often they occurred before in the file), so a
line already imported from an overlapping statement is recognised and skipped, never recorded twice.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, Payment
from isp_admin.services.billing.payments import record_payment
from isp_admin.services.imports.batches import write_rows
from isp_admin.services.imports.reading import Columns, Table
from isp_admin.services.imports.report import Report
from isp_admin.services.imports.values import bounded, chunks, parse_amount, parse_date

IDEMPOTENCY_SCOPE = "csv-import"
METHODS = {"": "bank_transfer", "bank_transfer": "bank_transfer", "bank": "bank_transfer", "transfer": "bank_transfer",
           "cash": "cash", "card": "card", "mobile_money": "mobile_money", "m_pesa": "mobile_money",
           "mpesa": "mobile_money"}
COLUMNS = Columns(
    names=("date", "amount", "reference", "account_number", "invoice_number", "method"),
    required=("date", "amount"),
    aliases={"received_on": "date", "value_date": "date", "booking_date": "date", "transaction_date": "date",
             "credit": "amount", "paid_in": "amount", "ref": "reference", "account": "account_number",
             "account_no": "account_number", "invoice": "invoice_number", "invoice_no": "invoice_number"},
)
FIELD_COLUMNS = {"amount_cents": "amount", "received_on": "date", "invoice_id": "invoice_number",
                 "customer_id": "account_number"}
EXAMPLE = [{"date": "2026-07-03", "amount": "29.99", "reference": "TRF 88812", "account_number": "10023",
            "invoice_number": "", "method": "bank_transfer"},
           {"date": "2026-07-04", "amount": "58.00", "reference": "MPESA QK12AB34", "account_number": "",
            "invoice_number": "INV-2026-000123", "method": "mobile_money"}]


@dataclass
class Line:
    """One statement line, parsed and matched."""

    number: int
    received_on: date | None = None
    amount_cents: int | None = None
    reference: str | None = None
    account: str | None = None
    invoice: str | None = None
    method: str = "bank_transfer"
    customer_id: int | None = None
    invoice_id: int | None = None
    key: str | None = None
    failed: bool = False
    skipped: bool = False


def _parse(number: int, cells: dict, options: dict, report: Report) -> Line:
    line = Line(number, account=cells.get("account_number") or None,
                invoice=cells.get("invoice_number", "").upper() or None)  # numbers are issued upper-case

    def fail(column: str, message: str) -> None:
        line.failed = True
        report.error(number, column, message)

    try:
        line.amount_cents = parse_amount(cells["amount"], options["decimal_comma"]) if cells.get("amount") else 0
    except ValueError as exc:
        fail("amount", str(exc))
    if line.amount_cents is not None and line.amount_cents <= 0:
        if options["skip_debits"]:  # money going out, or a balance line: not a payment, whatever else it says
            line.skipped = True
            report.notice(number, "amount", "Skipped: no money received on this line (a debit, or empty).")
            report.count("skipped")
            return line
        fail("amount", "A payment is money received: above zero. For a bank statement with debits, tick "
                       "“Skip debits” on the upload form.")
    try:
        line.received_on = parse_date(cells.get("date", ""), options["date_format"])
    except ValueError as exc:
        fail("date", str(exc))
    try:
        line.reference = bounded(cells.get("reference", ""), 120)
    except ValueError as exc:
        fail("reference", str(exc))
    method = cells.get("method", "").lower().replace("-", "_").replace(" ", "_")
    if method not in METHODS:
        fail("method", "bank_transfer, cash, card or mobile_money (empty: bank_transfer).")
    line.method = METHODS.get(method, "bank_transfer")
    if not (line.account or line.invoice):
        fail("account_number", "Give the customer's account number or the invoice number it pays.")
    return line


def _match(lines: list[Line], report: Report) -> None:
    """Find every line's customer and invoice: one query for the account numbers, one for the invoice numbers."""
    accounts = {ln.account for ln in lines if ln.account}
    numbers = {ln.invoice for ln in lines if ln.invoice}
    customers, invoices = {}, {}
    for chunk in chunks(sorted(accounts)):
        customers.update(db.session.execute(select(Customer.account_number, Customer.id)
                                            .where(Customer.account_number.in_(chunk))).all())
    for chunk in chunks(sorted(numbers)):
        invoices.update((row.number, row) for row in db.session.execute(
            select(Invoice.number, Invoice.id, Invoice.customer_id).where(Invoice.number.in_(chunk))))
    for line in lines:
        if line.failed or line.skipped:
            continue
        customer_id = customers.get(line.account) if line.account else None
        if line.account and customer_id is None:
            line.failed = True
            report.error(line.number, "account_number", f"No customer has the account number {line.account[:40]}.")
        if line.invoice:
            invoice = invoices.get(line.invoice)
            if invoice is None:
                line.failed = True
                report.error(line.number, "invoice_number", f"No invoice is numbered {line.invoice[:40]}.")
            elif customer_id is not None and invoice.customer_id != customer_id:
                line.failed = True
                report.error(line.number, "invoice_number", f"Invoice {line.invoice} is not account "
                                                            f"{line.account}'s.")
            else:
                customer_id, line.invoice_id = invoice.customer_id, invoice.id
        line.customer_id = customer_id


def _keys(lines: list[Line], report: Report) -> None:
    """Give each line its idempotency key, and skip the lines an earlier import already recorded."""
    seen: Counter = Counter()
    for line in lines:
        values = (line.received_on, line.amount_cents, line.reference, line.account, line.invoice, line.method)
        line.key = hashlib.sha256(repr((values, seen[values])).encode()).hexdigest()
        seen[values] += 1
    wanted = [ln.key for ln in lines if not (ln.failed or ln.skipped)]
    recorded: dict = {}
    for chunk in chunks(wanted):
        recorded.update(db.session.execute(select(Payment.idempotency_key, Payment.id).where(
            Payment.idempotency_scope == IDEMPOTENCY_SCOPE, Payment.idempotency_key.in_(chunk))).all())
    for line in lines:
        if line.key in recorded and not (line.failed or line.skipped):
            line.skipped = True
            report.notice(line.number, None, f"Skipped: an earlier import recorded this line (payment "
                                             f"#{recorded[line.key]}).")
            report.count("already_recorded")


def run(table: Table, options: dict, today: date, report: Report) -> None:
    """Check (and record, in the caller's transaction) every line; errors and counts go to `report`."""
    lines = [_parse(number, cells, options, report) for number, cells in table.rows]
    _match(lines, report)
    _keys(lines, report)

    def write(line: Line) -> None:
        _, created = record_payment(line.customer_id, line.amount_cents, line.method, line.received_on, today,
                                    reference=line.reference, invoice_id=line.invoice_id, idempotency_key=line.key,
                                    idempotency_scope=IDEMPOTENCY_SCOPE)
        if created:
            report.count("payments")
            report.count("amount_cents", line.amount_cents)

    write_rows([ln for ln in lines if not (ln.failed or ln.skipped)], write, report, FIELD_COLUMNS)

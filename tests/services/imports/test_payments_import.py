"""Importing payments from a bank statement: matched to a customer or invoice, recorded through the payment service."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CsvImport, Invoice, Payment, PaymentAllocation
from isp_admin.services.imports import uploads
from isp_admin.services.platform.audit import Actor, acting_as
from tests.factories import CustomerFactory
from tests.services.imports.helpers import PAYMENT_HEADER, csv_bytes
from tests.web.billing_world import billed_customer

STAFF = Actor("user", 9, "cashier@isp.example")


@pytest.fixture
def books(app):
    """Two billed customers with open invoices, and one with nothing owed."""
    ann, ann_invoice = billed_customer(account_number="ACC-100")
    bob, bob_invoice = billed_customer(account_number="ACC-200")
    CustomerFactory(account_number="ACC-300")
    return {"ann": ann.id, "ann_invoice": ann_invoice.number, "ann_total": ann_invoice.total_cents,
            "bob": bob.id, "bob_invoice": bob_invoice.number}


def upload(rows: list[dict], header=PAYMENT_HEADER, **options) -> CsvImport:
    with acting_as(STAFF):
        imp = uploads.upload("payments", "statement.csv", csv_bytes(header, rows), **options)
    db.session.commit()
    return imp


def apply(imp_id: int, **options):
    with acting_as(STAFF):
        outcome = uploads.apply(imp_id, **options)
    db.session.commit()
    return outcome


def payments() -> list[tuple]:
    db.session.rollback()
    return [(p.customer_id, p.amount_cents, p.reference, p.method, str(p.received_on)) for p in
            db.session.scalars(select(Payment).order_by(Payment.id))]


def test_lines_are_matched_by_account_or_invoice_and_recorded_only_on_apply(books):
    imp = upload([{"date": "2026-11-02", "amount": "12.50", "reference": "TRF 1", "account_number": "ACC-100"},
                  {"date": "2026-11-03", "amount": "1,000.00", "reference": "TRF 2",
                   "invoice_number": books["bob_invoice"].lower()}])
    assert imp.error_count == 0
    assert imp.report["counts"] == {"payments": 2, "amount_cents": 101250}
    assert payments() == []  # the preview recorded nothing

    outcome = apply(imp.id)
    assert outcome.applied
    assert payments() == [(books["ann"], 1250, "TRF 1", "bank_transfer", "2026-11-02"),
                          (books["bob"], 100000, "TRF 2", "bank_transfer", "2026-11-03")]
    bob_invoice = db.session.scalar(select(Invoice).where(Invoice.number == books["bob_invoice"]))
    assert bob_invoice.status == "paid"  # the named invoice is paid first; the rest is credit
    assert db.session.scalar(select(func.count()).select_from(PaymentAllocation)) == 2
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.action.in_(("payment.record", "import.apply"))))
    assert sorted(e.action for e in events) == ["import.apply", "payment.record", "payment.record"]
    applied = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "import.apply"))
    assert (applied.actor_label, applied.after["payments"], applied.after["amount_cents"]) == (
        "cashier@isp.example", 2, 101250)


def test_unmatched_and_wrong_lines_are_errors_and_nothing_is_recorded(books):
    imp = upload([
        {"date": "2026-11-02", "amount": "10.00", "account_number": "ACC-100"},                    # 2: fine
        {"date": "2026-11-02", "amount": "10.00", "account_number": "NOBODY"},                     # 3
        {"date": "2026-11-02", "amount": "10.00", "invoice_number": "INV-1999-000001"},            # 4
        {"date": "2026-11-02", "amount": "10.00", "account_number": "ACC-300",
         "invoice_number": books["ann_invoice"]},                                                  # 5: not theirs
        {"date": "2026-11-02", "amount": "-5.00", "account_number": "ACC-100"},                    # 6: a debit
        {"date": "2099-01-01", "amount": "10.00", "account_number": "ACC-100"},                    # 7: future
        {"date": "02/11/2026", "amount": "10.00", "account_number": "ACC-100"},                    # 8: not ISO
        {"date": "2026-11-02", "amount": "ten", "account_number": "ACC-100"},                      # 9
        {"date": "2026-11-02", "amount": "10.00"},                                                 # 10: no one
        {"date": "2026-11-02", "amount": "10.00", "account_number": "ACC-100", "reference": "R" * 121},  # 11
    ])
    assert [(e["row"], e["column"]) for e in imp.report["errors"]] == [
        (3, "account_number"), (4, "invoice_number"), (5, "invoice_number"), (6, "amount"), (7, "date"),
        (8, "date"), (9, "amount"), (10, "account_number"), (11, "reference")]
    assert not apply(imp.id).applied
    assert payments() == []


def test_a_paid_invoice_named_by_a_line_is_the_payment_services_refusal(books):
    first = upload([{"date": "2026-11-02", "amount": f"{books['ann_total'] / 100:.2f}",
                     "invoice_number": books["ann_invoice"]}])
    apply(first.id)
    imp = upload([{"date": "2026-11-04", "amount": "5.00", "invoice_number": books["ann_invoice"]}])
    assert [(e["row"], e["column"]) for e in imp.report["errors"]] == [(2, None)]
    assert "is paid" in imp.report["errors"][0]["message"]


def test_a_bank_statement_with_debits_decimal_commas_and_day_first_dates(books):
    content = (b"Booking date;Credit;Ref;Account\n"
               b"03.11.2026;1.234,50;SEPA 1;ACC-100\n"
               b"03.11.2026;-20,00;Fees;\n"
               b"04.11.2026;;Balance;\n")
    with acting_as(STAFF):
        imp = uploads.upload("payments", "bank.csv", content, date_format="dmy", decimal_comma=True,
                             skip_debits=True)
    db.session.commit()
    assert imp.error_count == 0
    assert imp.report["counts"] == {"payments": 1, "amount_cents": 123450, "skipped": 2}
    assert [n["row"] for n in imp.report["notices"]] == [3, 4]
    apply(imp.id)
    assert payments() == [(books["ann"], 123450, "SEPA 1", "bank_transfer", "2026-11-03")]


def test_lines_of_an_overlapping_statement_already_imported_are_skipped(books):
    monday = {"date": "2026-11-02", "amount": "10.00", "reference": "SAME", "account_number": "ACC-100"}
    tuesday = {"date": "2026-11-03", "amount": "20.00", "account_number": "ACC-200"}
    apply(upload([monday, monday]).id)  # two equal lines: two payments
    second = upload([monday, monday, monday, tuesday])  # the next statement repeats Monday (and one more)
    assert second.report["counts"] == {"already_recorded": 2, "payments": 2, "amount_cents": 3000}
    apply(second.id)
    assert [p[1] for p in payments()] == [1000, 1000, 1000, 2000]

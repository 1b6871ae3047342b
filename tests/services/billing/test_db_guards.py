"""The database refuses the double effect (issue 11 item 2), whatever the code above it does: an issued invoice and
its lines never change and are never deleted, one cancellation credit per subscription, one plan-change credit per
subscription and day, stored amounts paid equal their allocations; a refused write reaches a client as a 409."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from isp_admin.extensions import db
from isp_admin.services.billing import invoices, payments
from isp_admin.services.billing import run as billing
from tests.factories import PlanFactory, SubscriptionFactory
from tests.gunicorn_helpers import billing_token

D = date


@pytest.fixture
def issued(app):
    """An issued invoice (billed by the run), a draft and a payment, committed."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the guards below are PostgreSQL's (SQLite has the update/delete ones only)")
    sub = SubscriptionFactory(plan=PlanFactory(monthly_price_cents=3000, tax_rate_bp=0), start_date=D(2026, 3, 1),
                              billing_day=1, next_bill_date=D(2026, 3, 1))
    invoice = billing.generate_invoice_for_customer(sub.customer_id, D(2026, 3, 1))
    draft = invoices.create_draft(sub.customer_id, [{"description": "Visit", "unit_price_cents": 500}],
                                  D(2026, 3, 2))
    payment, _ = payments.record_payment(sub.customer_id, 1000, "cash", D(2026, 3, 2), D(2026, 3, 2),
                                         invoice_id=invoice.id)
    db.session.commit()
    return {"invoice": invoice.id, "draft": draft.id, "payment": payment.id, "sub": sub.id,
            "customer": sub.customer_id}


def refused(sql: str, **params) -> str:
    """Run `sql` (statements split by ';') and commit; return the database's reason for refusing it (the test fails
    if it is accepted)."""
    with pytest.raises(IntegrityError) as caught:
        for statement in sql.split(";"):
            db.session.execute(text(statement), params)
        db.session.commit()
    db.session.rollback()
    return str(caught.value.orig)


@pytest.mark.parametrize("change", ["total_cents = total_cents + 100, subtotal_cents = subtotal_cents + 100",
                                    "due_date = due_date + 30", "number = 'INV-2026-999999'",
                                    "status = 'draft', number = NULL"])
def test_an_issued_invoice_is_never_edited(issued, change):
    assert "never edited" in refused(f"UPDATE invoices SET {change} WHERE id = :id", id=issued["invoice"])


def test_an_issued_invoice_and_its_lines_are_never_deleted_or_changed(issued):
    assert "never deleted" in refused("DELETE FROM invoices WHERE id = :id", id=issued["invoice"])
    for sql in ("UPDATE invoice_lines SET amount_cents = 1 WHERE invoice_id = :id",
                "DELETE FROM invoice_lines WHERE invoice_id = :id",
                "INSERT INTO invoice_lines (invoice_id, kind, description, quantity, unit_price_cents, amount_cents, "
                "tax_rate_bp, tax_cents) VALUES (:id, 'adjustment', 'Extra', 1, 100, 100, 0, 0)"):
        assert "never changed" in refused(sql, id=issued["invoice"])


def test_a_draft_stays_editable_and_its_status_and_payments_still_move(issued):
    invoices.replace_draft_lines(issued["draft"], [{"description": "Two visits", "unit_price_cents": 900}])
    invoices.delete_draft(issued["draft"])
    payments.record_payment(issued["customer"], 2000, "cash", D(2026, 3, 3), D(2026, 3, 3),
                            invoice_id=issued["invoice"])
    db.session.commit()  # the guards let the ledger do its work


def test_a_second_cancellation_or_same_day_plan_change_credit_is_refused(issued):
    note = ("INSERT INTO credit_notes (number, customer_id, subscription_id, kind, reason, issue_date, currency, "
            "subtotal_cents, tax_cents, amount_cents, created_at) VALUES (:number, :customer, :sub, :kind, 'x', "
            ":day, 'USD', 100, 0, 100, now())")
    values = {"customer": issued["customer"], "sub": issued["sub"]}
    db.session.execute(text(note), {**values, "number": "CN-T-1", "kind": "cancellation", "day": D(2026, 3, 5)})
    db.session.execute(text(note), {**values, "number": "CN-T-2", "kind": "plan_change", "day": D(2026, 3, 5)})
    db.session.execute(text(note), {**values, "number": "CN-T-3", "kind": "plan_change", "day": D(2026, 3, 6)})
    db.session.commit()

    assert "uq_credit_notes_cancellation" in refused(note, **values, number="CN-T-4", kind="cancellation",
                                                     day=D(2026, 3, 7))
    assert "uq_credit_notes_plan_change" in refused(note, **values, number="CN-T-5", kind="plan_change",
                                                    day=D(2026, 3, 6))


def test_an_amount_paid_that_differs_from_the_allocations_is_refused_at_commit(issued):
    assert "allocations say" in refused("UPDATE invoices SET amount_paid_cents = amount_paid_cents + 500 "
                                        "WHERE id = :id", id=issued["invoice"])
    # A second allocation without moving the stored amount (the stale-copy bug of issue 11) is refused too.
    assert "allocations say" in refused(
        "INSERT INTO payment_allocations (payment_id, invoice_id, amount_cents, created_at) "
        "VALUES (:payment, :id, 1, now())", payment=issued["payment"], id=issued["invoice"])
    # And a payment spread beyond its amount, even with the invoice kept in step.
    assert "beyond its amount" in refused(
        "INSERT INTO payment_allocations (payment_id, invoice_id, amount_cents, created_at) "
        "VALUES (:payment, :id, 1000, now()); UPDATE invoices SET amount_paid_cents = amount_paid_cents + 1000 "
        "WHERE id = :id", payment=issued["payment"], id=issued["invoice"])


def test_a_write_the_database_refuses_is_a_409_envelope_not_a_500(issued, client, monkeypatch):
    headers, _ = billing_token()
    db.session.commit()

    def edits_an_issued_invoice(invoice_id, reason, today):
        db.session.execute(text("UPDATE invoices SET total_cents = total_cents + 1, subtotal_cents = subtotal_cents "
                                "+ 1 WHERE id = :id"), {"id": invoice_id})

    monkeypatch.setattr(invoices, "void", edits_an_issued_invoice)
    response = client.post(f"/api/billing/invoices/{issued['invoice']}/void/", json={"reason": "x"},
                           headers=headers)

    assert response.status_code == 409, response.get_data(as_text=True)
    body = response.get_json()
    assert (body["success"], body["error"]["code"]) == (False, "CONFLICT")
    assert "never edited" not in body["message"]  # the constraint's words stay in the log

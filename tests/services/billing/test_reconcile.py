"""Reconcile: clean books reconcile; each kind of tampering is reported as its own mismatch."""
from __future__ import annotations

from sqlalchemy import text

from isp_admin.extensions import db
from isp_admin.services.billing.reconcile import reconcile


def ids(sql: str) -> list[int]:
    return list(db.session.scalars(text(sql)))


def tamper(sql: str) -> None:
    """Change rows behind the services' back, past the guards (triggers) that refuse such edits."""
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL session_replication_role = replica"))
    db.session.execute(text(sql))
    db.session.flush()


def problems() -> set[tuple[str, str]]:
    return {(m.entity, m.problem) for m in reconcile()}


def test_clean_books_reconcile(books):
    assert reconcile() == []


def test_an_invoice_subtotal_that_differs_from_its_lines(books):
    [invoice_id] = ids("SELECT id FROM invoices WHERE status IN ('open', 'overdue') ORDER BY id LIMIT 1")
    tamper(f"UPDATE invoices SET subtotal_cents = subtotal_cents + 1, total_cents = total_cents + 1 "
           f"WHERE id = {invoice_id}")

    [mismatch, changed] = reconcile()
    assert (mismatch.entity, mismatch.entity_id, mismatch.problem) == (
        "invoice", invoice_id, "subtotal differs from its lines")
    assert (changed.entity_id, changed.problem) == (invoice_id, "changed since it was issued")
    assert mismatch.stored == mismatch.computed + 1


def test_an_amount_paid_that_differs_from_its_allocations(books):
    [invoice_id] = ids("SELECT invoice_id FROM payment_allocations WHERE reversed_at IS NULL "
                       "AND invoice_id IN (SELECT id FROM invoices WHERE status = 'paid') LIMIT 1")
    tamper(f"UPDATE invoices SET amount_paid_cents = amount_paid_cents - 100 WHERE id = {invoice_id}")

    assert ("invoice", "amount paid differs from its payment allocations") in problems()
    [mismatch] = [m for m in reconcile() if m.problem.startswith("amount paid")]
    assert (mismatch.entity_id, mismatch.stored - mismatch.computed) == (invoice_id, -100)


def test_a_reversed_payment_with_an_active_allocation(books):
    [payment_id] = ids("SELECT payment_id FROM payment_allocations WHERE reversed_at IS NULL LIMIT 1")
    tamper(f"UPDATE payments SET status = 'reversed', reversed_at = now() WHERE id = {payment_id}")

    found = [m for m in reconcile() if m.problem == "reversed but still allocated"]
    assert [(m.entity, m.entity_id) for m in found] == [("payment", payment_id)]


def test_an_over_applied_credit_note(books):
    [note_id] = ids("SELECT credit_note_id FROM credit_allocations WHERE reversed_at IS NULL "
                    "AND credit_note_id IN (SELECT id FROM credit_notes WHERE kind = 'cancellation') LIMIT 1")
    tamper(f"UPDATE credit_notes SET subtotal_cents = subtotal_cents - 50, amount_cents = amount_cents - 50 "
           f"WHERE id = {note_id}")

    assert problems() == {("credit_note", "applied more than its amount"),
                          ("credit_note", "credit differs from the unused days")}
    [mismatch, repriced] = reconcile()
    assert (mismatch.entity_id, mismatch.computed - mismatch.stored) == (note_id, 50)
    assert (repriced.entity_id, repriced.computed - repriced.stored) == (note_id, 50)


def test_a_paid_invoice_with_a_balance(books):
    [invoice_id] = ids("SELECT id FROM invoices WHERE status IN ('open', 'overdue') ORDER BY id LIMIT 1")
    tamper(f"UPDATE invoices SET status = 'paid', paid_at = now() WHERE id = {invoice_id}")

    assert problems() == {("invoice", "paid but a balance remains")}
    assert reconcile()[0].entity_id == invoice_id


def test_an_open_invoice_with_nothing_owed(books):
    [invoice_id] = ids("SELECT id FROM invoices WHERE status = 'paid' ORDER BY id LIMIT 1")
    tamper(f"UPDATE invoices SET status = 'open', paid_at = NULL WHERE id = {invoice_id}")

    assert problems() == {("invoice", "unpaid but nothing is owed")}


def test_a_payment_allocated_beyond_its_amount(books):
    [payment_id] = ids("SELECT payment_id FROM payment_allocations WHERE reversed_at IS NULL LIMIT 1")
    tamper(f"UPDATE payments SET amount_cents = 1 WHERE id = {payment_id}")

    assert ("payment", "allocated more than received") in problems()


def test_each_mismatch_names_its_customer(books):
    [invoice_id, customer_id] = db.session.execute(text(
        "SELECT id, customer_id FROM invoices WHERE status IN ('open', 'overdue') ORDER BY id LIMIT 1")).one()
    tamper(f"UPDATE invoices SET tax_cents = tax_cents + 7, total_cents = total_cents + 7 WHERE id = {invoice_id}")

    mismatches = reconcile()
    assert {(m.problem, m.customer_id) for m in mismatches} == {
        ("tax differs from its lines", customer_id), ("changed since it was issued", customer_id)}

"""`flask billing reconcile` proves more (issue 11 item 4): each check, given books corrupted behind the services'
back, makes the command exit 1 and name the customer; clean books exit 0."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from isp_admin.extensions import db


def one(sql: str, **params) -> tuple:
    return tuple(db.session.execute(text(sql), params).one())


def past_the_guards() -> None:
    """Let this transaction write what the triggers refuse (PostgreSQL; as a careless script with superuser might)."""
    db.session.execute(text("SET LOCAL session_replication_role = replica"))


def paid_by_a_reversed_payment() -> int:
    payment_id, customer_id = one("SELECT p.id, p.customer_id FROM payments p JOIN payment_allocations a "
                                  "ON a.payment_id = p.id AND a.reversed_at IS NULL LIMIT 1")
    past_the_guards()
    db.session.execute(text("UPDATE payments SET status = 'reversed', reversed_at = now() WHERE id = :id"),
                       {"id": payment_id})
    return customer_id


def credit_applied_adrift() -> int:
    invoice_id, customer_id = one("SELECT id, customer_id FROM invoices WHERE credit_applied_cents > 0 "
                                  "ORDER BY id LIMIT 1")
    past_the_guards()
    db.session.execute(text("UPDATE invoices SET credit_applied_cents = credit_applied_cents - 1 WHERE id = :id"),
                       {"id": invoice_id})
    return customer_id


def cancellation_credited_twice() -> int:
    note_id, customer_id = one("SELECT id, customer_id FROM credit_notes WHERE kind = 'cancellation'")
    # The unique index refuses this outright; drop it for this transaction only (DDL is transactional here).
    db.session.execute(text("DROP INDEX uq_credit_notes_cancellation"))
    db.session.execute(text(
        "INSERT INTO credit_notes (number, customer_id, invoice_id, subscription_id, kind, reason, issue_date, "
        "currency, subtotal_cents, tax_cents, amount_cents, created_at) SELECT 'CN-DUP-1', customer_id, invoice_id, "
        "subscription_id, kind, reason, issue_date, currency, subtotal_cents, tax_cents, amount_cents, created_at "
        "FROM credit_notes WHERE id = :id"), {"id": note_id})
    return customer_id


def credit_worth_more_than_the_unused_days() -> int:
    note_id, customer_id = one("SELECT id, customer_id FROM credit_notes WHERE kind = 'cancellation'")
    db.session.execute(text("UPDATE credit_notes SET subtotal_cents = subtotal_cents + 100, "
                            "amount_cents = amount_cents + 100 WHERE id = :id"), {"id": note_id})
    return customer_id


def invoice_edited_after_issue() -> int:
    line_id, invoice_id, customer_id = one(
        "SELECT l.id, i.id, i.customer_id FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
        "WHERE i.status IN ('open', 'overdue') ORDER BY l.id LIMIT 1")
    past_the_guards()
    db.session.execute(text("UPDATE invoice_lines SET amount_cents = amount_cents + 100 WHERE id = :id"),
                       {"id": line_id})
    db.session.execute(text("UPDATE invoices SET subtotal_cents = subtotal_cents + 100, "
                            "total_cents = total_cents + 100 WHERE id = :id"), {"id": invoice_id})
    return customer_id


def days_neither_billed_nor_suspended() -> int:
    sub_id, customer_id = one("SELECT id, customer_id FROM subscriptions WHERE status = 'active' ORDER BY id LIMIT 1")
    db.session.execute(text("UPDATE subscriptions SET next_bill_date = next_bill_date + 10 WHERE id = :id"),
                       {"id": sub_id})
    return customer_id


def a_period_billed_twice() -> int:
    line_id, customer_id = one(
        "SELECT l.id, i.customer_id FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
        "WHERE l.kind = 'subscription' AND l.days > 1 AND i.status <> 'void' ORDER BY l.id LIMIT 1")
    past_the_guards()
    db.session.execute(text(
        "INSERT INTO invoice_lines (invoice_id, subscription_id, kind, description, period_start, period_end, days, "
        "period_days, quantity, unit_price_cents, amount_cents, tax_rate_bp, tax_cents) SELECT invoice_id, "
        "subscription_id, kind, description, period_start + 1, period_end, days - 1, period_days, quantity, "
        "unit_price_cents, 0, tax_rate_bp, 0 FROM invoice_lines WHERE id = :id"), {"id": line_id})
    return customer_id


def a_line_changed_under_its_invoice() -> int:
    line_id, customer_id = one("SELECT l.id, i.customer_id FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id "
                               "WHERE i.status <> 'void' ORDER BY l.id LIMIT 1")
    past_the_guards()
    db.session.execute(text("UPDATE invoice_lines SET amount_cents = amount_cents + 1 WHERE id = :id"),
                       {"id": line_id})
    return customer_id


def marked_paid_with_money_owed() -> int:
    invoice_id, customer_id = one("SELECT id, customer_id FROM invoices WHERE status IN ('open', 'overdue') "
                                  "ORDER BY id LIMIT 1")
    db.session.execute(text("UPDATE invoices SET status = 'paid', paid_at = now() WHERE id = :id"), {"id": invoice_id})
    return customer_id


def a_payment_shrunk_below_its_allocations() -> int:
    payment_id, customer_id = one("SELECT p.id, p.customer_id FROM payments p JOIN payment_allocations a "
                                  "ON a.payment_id = p.id AND a.reversed_at IS NULL LIMIT 1")
    db.session.execute(text("UPDATE payments SET amount_cents = 1 WHERE id = :id"), {"id": payment_id})
    return customer_id


def voided_with_payments_still_applied() -> int:
    invoice_id, customer_id = one("SELECT i.id, i.customer_id FROM invoices i JOIN payment_allocations a "
                                  "ON a.invoice_id = i.id AND a.reversed_at IS NULL WHERE i.status = 'paid' LIMIT 1")
    db.session.execute(text("UPDATE invoices SET status = 'void', voided_at = now(), paid_at = NULL WHERE id = :id"),
                       {"id": invoice_id})
    return customer_id


CORRUPTIONS = {
    a_line_changed_under_its_invoice: "subtotal differs from its lines",
    marked_paid_with_money_owed: "paid but a balance remains",
    a_payment_shrunk_below_its_allocations: "allocated more than received",
    voided_with_payments_still_applied: "void but payments still applied",
    paid_by_a_reversed_payment: "amount paid differs from its payment allocations",
    credit_applied_adrift: "credit applied differs from its credit allocations",
    cancellation_credited_twice: "a second cancellation credit for one event",
    credit_worth_more_than_the_unused_days: "credit differs from the unused days",
    invoice_edited_after_issue: "changed since it was issued",
    days_neither_billed_nor_suspended: "coverage: neither billed nor suspended",
    a_period_billed_twice: "coverage: billed twice",
}


@pytest.fixture
def cli(app):
    return lambda: app.test_cli_runner().invoke(args=["billing", "reconcile"])


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS), ids=[f.__name__ for f in CORRUPTIONS])
def test_each_corruption_makes_reconcile_exit_1_naming_the_customer(books, cli, corrupt):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the corruptions go past PostgreSQL's guards")
    assert cli().exit_code == 0
    customer_id = corrupt()
    db.session.commit()
    try:
        result = cli()
        assert result.exit_code == 1, result.output
        lines = [line for line in result.stdout.splitlines() if CORRUPTIONS[corrupt] in line]
        assert lines and all(f"(customer {customer_id})" in line for line in lines), result.output
    finally:
        if corrupt is cancellation_credited_twice:  # the index belongs to every later test on this database
            db.session.execute(text("DELETE FROM credit_notes WHERE number = 'CN-DUP-1'"))
            db.session.execute(text(
                "CREATE UNIQUE INDEX IF NOT EXISTS uq_credit_notes_cancellation ON credit_notes (subscription_id) "
                "WHERE kind = 'cancellation'"))
            db.session.commit()

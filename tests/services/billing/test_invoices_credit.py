"""Invoices outside the run: drafts, issuing, and voiding with a credit note; money is never hard-deleted."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import BusinessRuleViolation, Invalid
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CreditAllocation, CreditNote, Invoice, InvoiceLine, PaymentAllocation
from isp_admin.services.billing import collections, invoices, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.ledger import customer_balance
from isp_admin.services.billing.reconcile import reconcile
from isp_admin.services.customers import subscriptions
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

D = date
ROUTER = {"description": "Router", "quantity": 2, "unit_price_cents": 2550, "tax_rate_bp": 1600}
CABLE = {"description": "Cable", "quantity": 3, "unit_price_cents": 333, "tax_rate_bp": 1650}


@pytest.fixture
def customer(app):
    return CustomerFactory()


def issued(customer_id: int, cents: int, day: date = D(2026, 3, 1)) -> Invoice:
    draft = invoices.create_draft(customer_id, [{"description": "Service", "quantity": 1, "unit_price_cents": cents,
                                                 "tax_rate_bp": 0}], day)
    return invoices.issue(draft.id, day)


def lines(invoice_id: int) -> list[tuple]:
    return list(db.session.execute(select(InvoiceLine.description, InvoiceLine.amount_cents, InvoiceLine.tax_cents)
                                   .where(InvoiceLine.invoice_id == invoice_id).order_by(InvoiceLine.id)))


def actions(entity_type: str, entity_id: int) -> list[str]:
    return list(db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.entity_type == entity_type, AuditEvent.entity_id == entity_id).order_by(AuditEvent.id)))


# --- drafts ----------------------------------------------------------------------------------------------------

def test_a_draft_is_created_edited_and_deleted_without_a_number(customer):
    draft = invoices.create_draft(customer.id, [ROUTER, CABLE], D(2026, 3, 1))

    assert (draft.status, draft.number) == ("draft", None)
    assert lines(draft.id) == [("Router", 5100, 816), ("Cable", 999, 165)]  # 999 × 16.5% = 164.835
    assert (draft.subtotal_cents, draft.tax_cents, draft.total_cents) == (6099, 981, 7080)
    invoices.replace_draft_lines(draft.id, [CABLE])
    assert lines(draft.id) == [("Cable", 999, 165)]
    assert draft.total_cents == 1164
    invoices.delete_draft(draft.id)
    db.session.commit()

    assert db.session.scalar(select(func.count()).select_from(Invoice)) == 0
    assert db.session.scalar(select(func.count()).select_from(InvoiceLine)) == 0
    assert actions("invoices", draft.id) == ["invoice.create_draft", "invoice.update_draft", "invoice.delete_draft"]


@pytest.mark.parametrize(("line", "field"), [
    pytest.param({"description": "", "unit_price_cents": 100}, "lines.0.description", id="no-description"),
    pytest.param({"description": "x", "quantity": 0, "unit_price_cents": 100}, "lines.0.quantity", id="quantity-0"),
    pytest.param({"description": "x", "unit_price_cents": -1}, "lines.0.unit_price_cents", id="negative-price"),
    pytest.param({"description": "x", "unit_price_cents": 1.5}, "lines.0.unit_price_cents", id="float-price"),
    pytest.param({"description": "x", "unit_price_cents": 1, "tax_rate_bp": 10001}, "lines.0.tax_rate_bp",
                 id="tax-over-100pct"),
])
def test_a_bad_draft_line_is_refused_with_its_field(customer, line, field):
    with pytest.raises(Invalid) as refused:
        invoices.create_draft(customer.id, [line], D(2026, 3, 1))
    assert field in refused.value.details
    with pytest.raises(Invalid):
        invoices.create_draft(customer.id, [], D(2026, 3, 1))


def test_issuing_numbers_dates_and_queues_the_invoice(customer):
    issued(customer.id, 1000)
    draft = invoices.create_draft(customer.id, [ROUTER], D(2026, 2, 20))

    invoice = invoices.issue(draft.id, D(2026, 3, 5))

    assert (invoice.number, invoice.status) == ("INV-2026-000002", "open")
    assert (invoice.issue_date, invoice.due_date) == (D(2026, 3, 5), D(2026, 3, 19))
    assert actions("invoices", invoice.id)[-1] == "invoice.issue"
    with pytest.raises(BusinessRuleViolation):
        invoices.issue(invoice.id, D(2026, 3, 5))


def test_an_issued_invoice_is_never_edited_or_deleted(customer):
    invoice = issued(customer.id, 1000)

    with pytest.raises(BusinessRuleViolation):
        invoices.replace_draft_lines(invoice.id, [ROUTER])
    with pytest.raises(BusinessRuleViolation):
        invoices.delete_draft(invoice.id)
    assert lines(invoice.id) == [("Service", 1000, 0)]
    assert invoice.total_cents == 1000


def test_a_zero_draft_is_issued_paid(customer):
    draft = invoices.create_draft(customer.id, [{"description": "Goodwill visit", "unit_price_cents": 0}],
                                  D(2026, 3, 1))

    invoice = invoices.issue(draft.id, D(2026, 3, 1))

    assert (invoice.status, invoice.balance_cents) == ("paid", 0)
    assert reconcile() == []


# --- void ------------------------------------------------------------------------------------------------------

def test_voiding_an_unpaid_invoice_credits_its_total(customer):
    draft = invoices.create_draft(customer.id, [ROUTER, CABLE], D(2026, 3, 1))
    invoice = invoices.issue(draft.id, D(2026, 3, 1))

    note = invoices.void(invoice.id, "  Billed the wrong customer ", D(2026, 3, 2))
    db.session.commit()

    assert (note.number, note.kind, note.invoice_id) == ("CN-2026-000001", "void", invoice.id)
    assert (note.subtotal_cents, note.tax_cents, note.amount_cents) == (6099, 981, 7080)
    assert (invoice.status, invoice.balance_cents, invoice.void_reason) == ("void", 0, "Billed the wrong customer")
    assert invoice.voided_at is not None
    assert db.session.scalar(select(CreditAllocation.amount_cents).where(
        CreditAllocation.credit_note_id == note.id, CreditAllocation.invoice_id == invoice.id)) == 7080
    assert "invoice.void" in actions("invoices", invoice.id)
    assert actions("credit_notes", note.id) == ["credit_note.void"]
    assert customer_balance(customer.id, D(2026, 3, 2)).net_cents == 0
    assert reconcile() == []


def test_voiding_a_paid_invoice_turns_the_payment_into_credit_for_other_invoices(customer):
    wrong = issued(customer.id, 1000)
    payment, _ = payments.record_payment(customer.id, 1000, "cash", D(2026, 3, 2), D(2026, 3, 2))
    assert wrong.status == "paid"
    other = issued(customer.id, 600, D(2026, 3, 3))

    invoices.void(wrong.id, "Duplicate", D(2026, 3, 4))

    allocations = list(db.session.execute(
        select(PaymentAllocation.invoice_id, PaymentAllocation.amount_cents, PaymentAllocation.reversed_at.is_(None))
        .where(PaymentAllocation.payment_id == payment.id).order_by(PaymentAllocation.id)))
    assert allocations == [(wrong.id, 1000, False), (other.id, 600, True)]
    assert (wrong.status, wrong.amount_paid_cents, wrong.paid_at) == ("void", 0, None)
    assert (other.status, other.balance_cents) == ("paid", 0)
    assert customer_balance(customer.id, D(2026, 3, 4)).credit_cents == 400
    assert reconcile() == []


def test_voiding_keeps_a_cancellation_credit_on_the_invoice_and_credits_only_the_rest(customer, monkeypatch):
    sub = SubscriptionFactory(customer=customer, plan=PlanFactory(monthly_price_cents=3000, tax_rate_bp=0),
                              start_date=D(2026, 3, 1), billing_day=1, next_bill_date=D(2026, 3, 1))
    march = billing.generate_invoice_for_customer(customer.id, D(2026, 3, 1))
    monkeypatch.setattr(subscriptions, "today", lambda: D(2026, 3, 16))
    subscriptions.cancel(sub.id, D(2026, 3, 16))   # 16/31 back as credit, applied to March
    db.session.refresh(march)
    assert march.credit_applied_cents == 1548
    later = issued(customer.id, 5000, D(2026, 3, 20))

    note = invoices.void(march.id, "Never connected", D(2026, 3, 21))

    # 16 March on were credited already: the void credits the other 15 days, and nothing is left over for the
    # later invoice (before, the cancellation credit came off March and paid 1548 of it: those days twice).
    assert note.amount_cents == 3000 - 1548
    assert "less CN-" in note.reason
    assert (march.status, march.credit_applied_cents) == ("void", 3000)
    assert (later.credit_applied_cents, later.balance_cents) == (0, 5000)
    assert customer_balance(customer.id, D(2026, 3, 21)).credit_cents == 0
    assert reconcile() == []


def test_voiding_twice_is_refused_and_the_database_refuses_a_second_void_note(customer):
    invoice = issued(customer.id, 1000)
    invoices.void(invoice.id, "Duplicate", D(2026, 3, 2))
    db.session.commit()

    with pytest.raises(BusinessRuleViolation):
        invoices.void(invoice.id, "Again", D(2026, 3, 2))
    db.session.add(CreditNote(number="CN-2026-999999", customer_id=customer.id, invoice_id=invoice.id, kind="void",
                              reason="forced", issue_date=D(2026, 3, 2), currency="USD", subtotal_cents=1000,
                              tax_cents=0, amount_cents=1000))
    with pytest.raises(IntegrityError, match="uq_credit_notes_void_invoice"):
        db.session.flush()
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(CreditNote)) == 1


def test_void_needs_a_reason_and_an_issued_invoice(customer):
    invoice = issued(customer.id, 1000)
    draft = invoices.create_draft(customer.id, [ROUTER], D(2026, 3, 1))

    with pytest.raises(Invalid):
        invoices.void(invoice.id, " ", D(2026, 3, 2))
    with pytest.raises(BusinessRuleViolation):
        invoices.void(draft.id, "Nope", D(2026, 3, 2))
    assert invoice.status == "open"


def test_a_zero_invoice_cannot_be_voided_into_a_zero_credit_note(customer):
    draft = invoices.create_draft(customer.id, [{"description": "Free month", "unit_price_cents": 0}], D(2026, 3, 1))
    invoice = invoices.issue(draft.id, D(2026, 3, 1))

    with pytest.raises(BusinessRuleViolation):
        invoices.void(invoice.id, "Nothing to void", D(2026, 3, 2))


# --- money is never hard-deleted -------------------------------------------------------------------------------

MONEY_TABLES = ("invoices", "invoice_lines", "payments", "payment_allocations", "credit_notes",
                "credit_allocations", "audit_events")


def test_no_service_path_hard_deletes_a_money_record(app, monkeypatch):
    deletes: list[str] = []

    def spy(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith(("DELETE", "TRUNCATE")):
            deletes.append(statement)

    event.listen(db.engine, "before_cursor_execute", spy)
    try:
        customer = CustomerFactory()
        plan = PlanFactory(monthly_price_cents=3000, setup_fee_cents=1000)
        subs = [SubscriptionFactory(customer=customer, plan=plan, start_date=D(2026, 1, 1), billing_day=1,
                                    next_bill_date=D(2026, 1, 1)) for _ in range(3)]
        billing.generate_invoice_for_customer(customer.id, D(2026, 2, 1))
        payment, _ = payments.record_payment(customer.id, 4000, "cash", D(2026, 2, 2), D(2026, 2, 2))
        payments.reverse_payment(payment.id, "Bounced", D(2026, 2, 3))
        payments.record_payment(customer.id, 9000, "card", D(2026, 2, 3), D(2026, 2, 3))
        for step in ("mark_overdue", "enforce_overdue", "send_reminders", "reactivate_paid"):
            getattr(collections, f"run_{step}")(D(2026, 3, 1))
        monkeypatch.setattr(subscriptions, "today", lambda: D(2026, 2, 10))
        subscriptions.change_plan(subs[0].id, PlanFactory(monthly_price_cents=5000).id)
        subscriptions.cancel(subs[1].id, D(2026, 2, 10))
        invoice = issued(customer.id, 700, D(2026, 2, 10))
        invoices.void(invoice.id, "Mistake", D(2026, 2, 11))
        first = db.session.scalar(select(Invoice).order_by(Invoice.id).limit(1))
        invoices.void(first.id, "Re-bill", D(2026, 2, 11))
        db.session.commit()
    finally:
        event.remove(db.engine, "before_cursor_execute", spy)

    assert not [s for s in deletes if any(t in s for t in MONEY_TABLES)], deletes
    assert reconcile() == []

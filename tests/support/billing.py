"""Billing data for tests: subscriptions due on AS_OF, the periods billed, invoices and payments inserted as rows."""
from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import insert, select, text

from isp_admin.extensions import db
from isp_admin.models import Invoice, InvoiceLine, Payment
from tests.conftest import is_postgres
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

AS_OF = date(2026, 3, 1)


def customers_due(count: int) -> list:
    """`count` customers, each with one subscription two periods behind (Feb and Mar are due on 1 Mar)."""
    plan = PlanFactory(monthly_price_cents=3100, tax_rate_bp=1600)
    return [SubscriptionFactory(plan=plan, customer=CustomerFactory(), start_date=date(2026, 1, 1), billing_day=1,
                                next_bill_date=date(2026, 2, 1)) for _ in range(count)]


def billed_periods() -> set[tuple[int, date]]:
    """The (subscription, period start) of every subscription line, as committed."""
    db.session.rollback()
    return set(db.session.execute(select(InvoiceLine.subscription_id, InvoiceLine.period_start)
                                  .where(InvoiceLine.kind == "subscription")).tuples())


def make_invoice(customer_id: int, status: str, issued, total: int, n: int) -> dict:
    """Insert one invoice that satisfies every invoice constraint; return its plain values."""
    now = datetime.now(UTC)
    values = {"customer_id": customer_id, "status": status, "issue_date": issued,
              "due_date": issued + timedelta(days=14), "currency": "USD", "subtotal_cents": total, "tax_cents": 0,
              "total_cents": total, "amount_paid_cents": total if status == "paid" else 0,
              "credit_applied_cents": total if status == "void" else 0,
              "number": None if status == "draft" else f"INV-{issued.year}-{900000 + n:06d}",
              "paid_at": now if status == "paid" else None, "voided_at": now if status == "void" else None}
    invoice_id = db.session.execute(insert(Invoice).values(**values).returning(Invoice.id)).scalar_one()
    return {"id": invoice_id, **values}


def make_payment(customer_id: int, amount: int, method: str, received, reversed_: bool = False) -> dict:
    """Insert one payment (reversed or completed); return its plain values."""
    values = {"customer_id": customer_id, "amount_cents": amount, "currency": "USD", "method": method,
              "received_on": received, "status": "reversed" if reversed_ else "completed", "recorded_by": "test",
              "reversed_at": datetime.now(UTC) if reversed_ else None}
    payment_id = db.session.execute(insert(Payment).values(**values).returning(Payment.id)).scalar_one()
    return {"id": payment_id, **values}


@contextmanager
def refused_by_trigger(sql_condition: str, *, deferred: bool = False):
    """A trigger that refuses one customer's rows, as a database would (a constraint, a guard); dropped after."""
    if not is_postgres():
        pytest.skip("PostgreSQL triggers")
    table, when = ("invoices", "AFTER INSERT") if deferred else ("invoice_lines", "BEFORE INSERT")
    kind = "CONSTRAINT TRIGGER" if deferred else "TRIGGER"
    timing = "DEFERRABLE INITIALLY DEFERRED " if deferred else ""
    db.session.execute(text(f"""
        CREATE OR REPLACE FUNCTION test_refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF {sql_condition} THEN RAISE EXCEPTION 'refused by the test trigger'; END IF;
          RETURN NEW;
        END $$;
        CREATE {kind} test_refuse_one {when} ON {table} {timing}FOR EACH ROW EXECUTE FUNCTION test_refuse_one();
    """))
    db.session.commit()
    try:
        yield
    finally:
        db.session.rollback()
        db.session.execute(text(f"DROP TRIGGER IF EXISTS test_refuse_one ON {table}; "
                                "DROP FUNCTION IF EXISTS test_refuse_one()"))
        db.session.commit()

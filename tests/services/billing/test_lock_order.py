"""Lock first, then read (DESIGN §3): every write to money or service state takes its customer's row lock before
it reads or writes any money or service row. Checked on the SQL each service actually sends, so a service that
reads its record before the lock (the stale-copy bug of issue 11) fails here, whatever its code looks like."""
from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import date

import pytest
from sqlalchemy import event

from isp_admin.extensions import db
from isp_admin.services.billing import invoices, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.customers import subscriptions
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

D = date
GUARDED = ("invoices", "invoice_lines", "payments", "payment_allocations", "credit_notes", "credit_allocations",
           "subscriptions", "suspension_periods")
# Before the lock a service may learn whose record it is, and nothing else.
OWNER_LOOKUP = re.compile(r"^SELECT (\w+)\.customer_id\s+FROM \1\s+WHERE \1\.id = ", re.S)
TOUCHES = re.compile(r"\b(?:FROM|JOIN|INTO|UPDATE)\s+(" + "|".join(GUARDED) + r")\b")


@contextmanager
def statements():
    sent: list[str] = []

    def record(_conn, _cursor, statement, *_args):
        sent.append(" ".join(statement.split()))

    engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def before_the_lock(sent: list[str]) -> list[str]:
    for index, statement in enumerate(sent):
        if "FROM customers" in statement and "FOR UPDATE" in statement:
            return sent[:index]
    raise AssertionError(f"no customer lock among {len(sent)} statements: {sent[:5]}")


@pytest.fixture
def world(app, monkeypatch):
    monkeypatch.setattr(subscriptions, "today", lambda: D(2026, 3, 10))
    plans = [PlanFactory(monthly_price_cents=3000, tax_rate_bp=1600), PlanFactory(monthly_price_cents=5000)]
    customer = CustomerFactory()
    subs = [SubscriptionFactory(customer=customer, plan=plans[0], start_date=D(2026, 3, 1), billing_day=1,
                                next_bill_date=D(2026, 3, 1), pppoe_username=f"lock{i}") for i in range(3)]
    invoice = billing.generate_invoice_for_customer(customer.id, D(2026, 3, 1))
    payment, _ = payments.record_payment(customer.id, 1000, "cash", D(2026, 3, 2), D(2026, 3, 2))
    draft = invoices.create_draft(customer.id, [{"description": "Visit", "unit_price_cents": 500}], D(2026, 3, 9))
    subscriptions.suspend(subs[2].id, "vacation")
    db.session.commit()
    return {"customer": customer.id, "plans": [p.id for p in plans], "subs": [s.id for s in subs],
            "invoice": invoice.id, "payment": payment.id, "draft": draft.id}


WRITES = {
    "pay": lambda w: payments.record_payment(w["customer"], 500, "cash", D(2026, 3, 10), D(2026, 3, 10),
                                             invoice_id=w["invoice"]),
    "reverse": lambda w: payments.reverse_payment(w["payment"], "Bounced", D(2026, 3, 10)),
    "void": lambda w: invoices.void(w["invoice"], "Wrong", D(2026, 3, 10)),
    "issue": lambda w: invoices.issue(w["draft"], D(2026, 3, 10)),
    "edit draft": lambda w: invoices.replace_draft_lines(w["draft"], [{"description": "X", "unit_price_cents": 1}]),
    "delete draft": lambda w: invoices.delete_draft(w["draft"]),
    "new draft": lambda w: invoices.create_draft(w["customer"], [{"description": "Y", "unit_price_cents": 2}],
                                                 D(2026, 3, 10)),
    "generate invoice": lambda w: billing.generate_invoice_for_customer(w["customer"], D(2026, 4, 1)),
    "cancel": lambda w: subscriptions.cancel(w["subs"][0], D(2026, 3, 10)),
    "change plan": lambda w: subscriptions.change_plan(w["subs"][0], w["plans"][1]),
    "suspend": lambda w: subscriptions.suspend(w["subs"][1], "manual"),
    "resume": lambda w: subscriptions.resume(w["subs"][2]),
    "network": lambda w: subscriptions.update_network(w["subs"][1], "lock-new", None, None),
    "add subscription": lambda w: subscriptions.add_subscription(w["customer"], w["plans"][1], D(2026, 3, 10)),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_every_money_or_service_write_locks_its_customer_before_reading(world, write):
    # The test's own session read these rows while building the world: the service must not trust those copies.
    with statements() as sent:
        WRITES[write](world)
        db.session.flush()

    early = [s for s in before_the_lock(sent) if TOUCHES.search(s) and not OWNER_LOOKUP.match(s)]
    assert early == [], f"{write} read or wrote before locking its customer: {early}"

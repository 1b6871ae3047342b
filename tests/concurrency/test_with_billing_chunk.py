"""Every money or service-state write on a customer races that customer's billing: a billing chunk
(`bill_customer_range`, what an RQ worker runs in one transaction) in-process and two `generate-invoice` requests,
all released by one barrier with six copies of the write, through real gunicorn on PostgreSQL.

Whatever the order: the due period is billed exactly once (or not at all when a cancellation went first), the write
has exactly its one effect, no answer is a 5xx, the chunk never fails, and the ledger and billing coverage hold.
"""
from __future__ import annotations

import pytest

from isp_admin.extensions import db
from isp_admin.models import Invoice, InvoiceLine, Payment, Subscription
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.calendar import tax_on
from isp_admin.services.customers import subscriptions as subscription_service
from isp_admin.services.platform.clock import today
from tests.concurrency import ledger
from tests.concurrency.invariants import coverage_problems, ledger_problems
from tests.concurrency.racing import (
    Request,
    assert_clean,
    cancel,
    change_plan,
    delete,
    edit,
    issue,
    pay,
    race,
    reverse,
    void,
)
from tests.factories import CustomerFactory, PlanFactory

COPIES = 6  # of the write, beside two generate-invoice requests and the chunk
ROUNDS = 2
REFUSED = {409, 422}
OPERATIONS = ["pay", "void", "reverse", "cancel", "change_plan", "suspend", "resume", "issue", "edit", "delete"]
# Suspend and resume race the billing of a subscription that started ten days ago and was never billed: its first
# period began while it was active, so it must be billed whatever the order (DESIGN §3: only days actually spent
# suspended go unbilled). The other writes race the billing of a period that starts today.
STARTED_DAYS_AGO = {"suspend": 10, "resume": 10}


def write(operation: str, ids: dict, n: int) -> Request:
    """The n-th copy of the racing write."""
    return {"pay": lambda: pay(ids["invoice"]), "void": lambda: void(ids["invoice"]),
            "reverse": lambda: reverse(ids["payment"]), "cancel": lambda: cancel(ids["sub"]),
            "change_plan": lambda: change_plan(ids["sub"], ids["plan"]), "issue": lambda: issue(ids["draft"]),
            "edit": lambda: edit(ids["draft"], n), "delete": lambda: delete(ids["draft"]),
            "suspend": lambda: Request("suspend", "POST", f"/api/subscriptions/{ids['sub']}/suspend/",
                                       {"reason": "vacation"}),
            "resume": lambda: Request("resume", "POST", f"/api/subscriptions/{ids['sub']}/resume/")}[operation]()


def chunk_for(app, customer_id: int):
    """The billing chunk of one customer, in its own app context and transaction (as a worker runs it)."""
    def run() -> dict:
        with app.app_context():
            counts = billing.bill_customer_range(today(), (customer_id, customer_id))
            db.session.commit()
            return counts

    return run


def period_lines(sub_id: int) -> list[InvoiceLine]:
    """The subscription's period lines, in order."""
    return list(db.session.scalars(db.select(InvoiceLine).where(
        InvoiceLine.subscription_id == sub_id, InvoiceLine.kind == "subscription").order_by(InvoiceLine.period_start)))


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_write_racing_the_customer_s_billing_has_one_effect_and_bills_the_period_once(
        app, server, headers, tally, operation):
    old = PlanFactory(monthly_price_cents=4900, tax_rate_bp=1600)
    new = PlanFactory(monthly_price_cents=7900, tax_rate_bp=1600)
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        sub = ledger.due_subscription(customer, old, days_ago=STARTED_DAYS_AGO.get(operation, 0))
        if operation == "resume":
            subscription_service.suspend(sub.id, "vacation")  # today: it was active until now
            db.session.commit()
        invoice = ledger.open_invoice(customer.id, 10000)
        earlier_id = ledger.payment(customer.id, 10000, invoice.id).id if operation == "reverse" else None
        draft_id = ledger.draft(customer.id, 10000).id if operation in ("issue", "edit", "delete") else None
        sub_id, customer_id, invoice_id = sub.id, customer.id, invoice.id
        ids = {"invoice": invoice_id, "payment": earlier_id, "sub": sub_id, "plan": new.id, "draft": draft_id}
        generate = Request("generate", "POST", "/api/billing/generate-invoice/", {"customer_id": customer_id})

        outcome = race(server, headers, [write(operation, ids, n) for n in range(COPIES)] + [generate] * 2,
                       also=[chunk_for(app, customer_id)])
        tally(outcome)

        success = {"pay": 201}.get(operation, 200)
        assert_clean(outcome, {operation: {success, 404} | REFUSED if operation == "delete" else {success} | REFUSED,
                               "generate": {200, 201} | REFUSED})
        [chunk] = outcome.extras
        after = ledger.fresh(Subscription, sub_id)
        billed = period_lines(sub_id)
        # The due period: billed once (by the chunk or by one generate-invoice), or, when a cancellation or a
        # suspension went first, not yet and still due from its start: never skipped.
        assert [line.period_start for line in billed] in ([after.start_date], []), \
            f"periods billed from {[str(line.period_start) for line in billed]}, started {after.start_date}\n" \
            f"{outcome.evidence()}"
        assert billed or after.next_bill_date == after.start_date, \
            f"unbilled, yet next bill date moved to {after.next_bill_date}\n{outcome.evidence()}"
        generated = [a for a in outcome.ok("generate") if a.data is not None]
        billing_invoices = len({line.invoice_id for line in billed})
        if operation == "resume":  # a resume may bill the periods begun while active itself
            assert chunk["invoices"] + len(generated) <= billing_invoices, outcome.evidence()
        else:
            assert chunk["invoices"] + len(generated) == billing_invoices, outcome.evidence()
        check_effect(operation, outcome, customer_id, sub_id, invoice_id, earlier_id, draft_id, new)
        problems = ledger_problems() + coverage_problems(today())
        assert not problems, "\n".join(problems) + "\n" + outcome.evidence()


def check_effect(operation, outcome, customer_id, sub_id, invoice_id, earlier_id, draft_id, new_plan) -> None:
    """The write's one effect, whichever way the race went."""
    evidence = outcome.evidence()
    wins = outcome.ok(operation)
    if operation == "pay":
        assert wins and ledger.allocations_to(invoice_id, active_only=False) == [10000], evidence
        assert ledger.fresh(Invoice, invoice_id).status == "paid", evidence
        assert ledger.payment_ids(customer_id) == sorted(a.data["id"] for a in wins), evidence
    elif operation == "void":
        assert len(wins) == 1 and len(ledger.credit_notes("void", invoice_id=invoice_id)) == 1, evidence
        assert ledger.fresh(Invoice, invoice_id).status == "void", evidence
    elif operation == "reverse":
        assert len(wins) == 1 and ledger.fresh(Payment, earlier_id).status == "reversed", evidence
        assert len(ledger.audit_ids("payment.reverse", "payments", earlier_id)) == 1, evidence
    elif operation == "cancel":
        assert len(wins) == 1 and ledger.fresh(Subscription, sub_id).status == "cancelled", evidence
        # Cancelled on the period's first day: whatever was billed for it comes back, once (nothing if unbilled).
        assert ledger.credited_cents(sub_id) == ledger.billed_cents(sub_id), evidence
        assert len(ledger.credit_notes("cancellation", subscription_id=sub_id)) <= 1, evidence
    elif operation == "change_plan":
        assert len(wins) == 1 and ledger.fresh(Subscription, sub_id).plan_id == new_plan.id, evidence
        # Billed before the change or after it, the period costs the new plan's price, once.
        net = ledger.billed_cents(sub_id) - ledger.credited_cents(sub_id)
        price = new_plan.monthly_price_cents
        assert net == price + tax_on(price, new_plan.tax_rate_bp), evidence
    elif operation == "suspend":
        assert len(wins) == 1 and ledger.fresh(Subscription, sub_id).status == "suspended", evidence
    elif operation == "resume":
        assert len(wins) == 1 and ledger.fresh(Subscription, sub_id).status == "active", evidence
    elif operation == "issue":
        assert len(wins) == 1 and ledger.fresh(Invoice, draft_id).status == "open", evidence
        assert len(ledger.audit_ids("invoice.issue", "invoices", draft_id)) == 1, evidence
    elif operation == "edit":
        assert len(wins) == COPIES and ledger.fresh(Invoice, draft_id).status == "draft", evidence
        assert len(ledger.audit_ids("invoice.update_draft", "invoices", draft_id)) == COPIES, evidence
    elif operation == "delete":
        assert len(wins) == 1 and ledger.fresh(Invoice, draft_id) is None, evidence


def test_two_chunks_and_generate_invoice_racing_bill_each_due_period_once(app, server, headers, tally):
    plan = PlanFactory(monthly_price_cents=4900, tax_rate_bp=1600)
    for _ in range(ROUNDS):
        customers = [CustomerFactory() for _ in range(3)]
        subs = [ledger.due_subscription(c, plan, days_ago=40) for c in customers]  # two periods due each
        first, last = customers[0].id, customers[-1].id
        generate = [Request("generate", "POST", "/api/billing/generate-invoice/", {"customer_id": c.id})
                    for c in customers] * 2

        def chunk(first=first, last=last):
            with app.app_context():
                counts = billing.bill_customer_range(today(), (first, last))
                db.session.commit()
                return counts

        outcome = race(server, headers, generate, also=[chunk, chunk])
        tally(outcome)

        assert_clean(outcome, {"generate": {200, 201} | REFUSED})
        made = sum(extra["invoices"] for extra in outcome.extras) + sum(
            1 for a in outcome.ok("generate") if a.data is not None)
        assert made == len(customers), outcome.evidence()  # one invoice per customer, whoever made it
        for sub in subs:
            starts = [line.period_start for line in period_lines(sub.id)]
            assert len(starts) == 2 and len(set(starts)) == 2, f"periods billed {starts}\n{outcome.evidence()}"
        problems = ledger_problems() + coverage_problems(today())
        assert not problems, "\n".join(problems) + "\n" + outcome.evidence()

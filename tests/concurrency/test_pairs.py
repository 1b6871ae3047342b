"""Two staff scripts (or one double click) hit the same customer's money at the same instant, through real gunicorn
on PostgreSQL: exactly the effects the rules allow happen, every loser gets a clean 4xx envelope, never a 5xx,
and the ledger balances afterwards (reconcile and the direct SQL checks of tests/concurrency/invariants.py).

Each race is N requests released together by a barrier, repeated for a few rounds with a fresh customer each.
"""
from __future__ import annotations

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import Invoice, InvoiceLine, Payment, Subscription
from isp_admin.services.billing.calendar import prorate, tax_on
from isp_admin.services.customers import subscriptions as subscription_service
from isp_admin.services.platform.clock import today
from tests.concurrency import ledger
from tests.concurrency.invariants import coverage_problems, ledger_problems
from tests.concurrency.racing import assert_clean, cancel, change_plan, delete, edit, issue, pay, race, reverse, void
from tests.factories import CustomerFactory, PlanFactory

N = 12  # racers per round
ROUNDS = 3
REFUSED = {409, 422}  # CONFLICT, or BUSINESS_RULE_VIOLATION / VALIDATION_ERROR


def assert_ledger_sound(outcome) -> None:
    """reconcile() finds nothing, and neither do the direct checks; the evidence of the race if they do."""
    problems = ledger_problems() + coverage_problems(today())
    assert not problems, "\n".join(problems) + "\n" + outcome.evidence()


def paid_in(outcome) -> list[int]:
    """The ids of the payments that 201 answers report."""
    return sorted(a.data["id"] for a in outcome.ok("pay"))


def test_a_double_clicked_pay_takes_the_invoice_s_money_once(app, server, headers, tally):
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        invoice = ledger.open_invoice(customer.id, 10000)

        outcome = race(server, headers, [pay(invoice.id, 10000)] * N)
        tally(outcome)

        assert_clean(outcome, {"pay": {201} | REFUSED})
        assert outcome.ok("pay"), outcome.evidence()
        assert ledger.allocations_to(invoice.id) == [10000], outcome.evidence()
        after = ledger.fresh(Invoice, invoice.id)
        assert (after.status, after.amount_paid_cents) == ("paid", 10000), outcome.evidence()
        # Every 201 is a payment on record and every payment on record answered 201: nothing lost, nothing phantom.
        assert ledger.payment_ids(customer.id) == paid_in(outcome), outcome.evidence()
        # A second payment the rules let through is the customer's credit, never a second allocation to the invoice.
        assert ledger.allocations_to(invoice.id, active_only=False) == [10000], outcome.evidence()
        assert_ledger_sound(outcome)


def test_two_voids_of_one_invoice_make_one_credit_note(app, server, headers, tally):
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        invoice = ledger.open_invoice(customer.id, 10000)

        outcome = race(server, headers, [void(invoice.id)] * N)
        tally(outcome)

        assert_clean(outcome, {"void": {200} | REFUSED})
        assert len(outcome.ok("void")) == 1, outcome.evidence()
        notes = ledger.credit_notes("void", invoice_id=invoice.id)
        assert [n.amount_cents for n in notes] == [10000], outcome.evidence()
        after = ledger.fresh(Invoice, invoice.id)
        assert (after.status, after.amount_paid_cents, after.credit_applied_cents) == ("void", 0, 10000)
        assert_ledger_sound(outcome)


def test_a_pay_racing_a_void_leaves_the_invoice_void_and_the_money_as_credit(app, server, headers, tally):
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        invoice = ledger.open_invoice(customer.id, 10000)

        outcome = race(server, headers, [pay(invoice.id), void(invoice.id)] * (N // 2))
        tally(outcome)

        assert_clean(outcome, {"pay": {201} | REFUSED, "void": {200} | REFUSED})
        assert len(outcome.ok("void")) == 1, outcome.evidence()
        assert len(ledger.credit_notes("void", invoice_id=invoice.id)) == 1, outcome.evidence()
        after = ledger.fresh(Invoice, invoice.id)
        assert (after.status, after.amount_paid_cents) == ("void", 0), outcome.evidence()
        assert ledger.allocations_to(invoice.id) == [], outcome.evidence()
        # The invoice was paid at most once before it was voided; any payment recorded stays as credit.
        assert len(ledger.allocations_to(invoice.id, active_only=False)) <= 1, outcome.evidence()
        assert ledger.payment_ids(customer.id) == paid_in(outcome), outcome.evidence()
        assert_ledger_sound(outcome)


def test_a_payment_reversed_twice_at_once_is_reversed_once(app, server, headers, tally):
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        invoice = ledger.open_invoice(customer.id, 10000)
        payment = ledger.payment(customer.id, 10000, invoice.id)

        outcome = race(server, headers, [reverse(payment.id)] * N)
        tally(outcome)

        assert_clean(outcome, {"reverse": {200} | REFUSED})
        assert len(outcome.ok("reverse")) == 1, outcome.evidence()
        assert ledger.fresh(Payment, payment.id).status == "reversed"
        assert len(ledger.audit_ids("payment.reverse", "payments", payment.id)) == 1, outcome.evidence()
        after = ledger.fresh(Invoice, invoice.id)
        assert (after.status, after.amount_paid_cents) == ("open", 0), outcome.evidence()
        assert_ledger_sound(outcome)


def test_a_pay_racing_a_reversal_of_an_earlier_payment_keeps_the_invoice_exact(app, server, headers, tally):
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        invoice = ledger.open_invoice(customer.id, 10000)
        earlier = ledger.payment(customer.id, 5000, invoice.id)

        outcome = race(server, headers, [pay(invoice.id, 5000), reverse(earlier.id)] * (N // 2))
        tally(outcome)

        assert_clean(outcome, {"pay": {201} | REFUSED, "reverse": {200} | REFUSED})
        assert len(outcome.ok("reverse")) == 1, outcome.evidence()
        assert ledger.fresh(Payment, earlier.id).status == "reversed"
        assert ledger.payment_ids(customer.id) == sorted([earlier.id, *paid_in(outcome)]), outcome.evidence()
        after = ledger.fresh(Invoice, invoice.id)
        assert after.amount_paid_cents == sum(ledger.allocations_to(invoice.id)) <= 10000, outcome.evidence()
        assert_ledger_sound(outcome)


def test_a_subscription_cancelled_twice_at_once_is_credited_once(app, server, headers, tally):
    plan = PlanFactory(monthly_price_cents=4900, tax_rate_bp=1600)
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        sub = ledger.billed_subscription(customer, plan)
        billed = ledger.billed_cents(sub.id)  # the whole period [today, +1 month) is unused

        outcome = race(server, headers, [cancel(sub.id)] * N)
        tally(outcome)

        assert_clean(outcome, {"cancel": {200} | REFUSED})
        assert len(outcome.ok("cancel")) == 1, outcome.evidence()
        notes = ledger.credit_notes("cancellation", subscription_id=sub.id)
        assert [n.amount_cents for n in notes] == [billed], outcome.evidence()
        assert ledger.fresh(Subscription, sub.id).status == "cancelled"
        assert len(ledger.audit_ids("subscription.cancel", "subscriptions", sub.id)) == 1, outcome.evidence()
        assert_ledger_sound(outcome)


def test_a_cancel_racing_a_plan_change_credits_exactly_the_unused_days(app, server, headers, tally):
    old, new = PlanFactory(monthly_price_cents=4900, tax_rate_bp=1600), PlanFactory(monthly_price_cents=7900,
                                                                                     tax_rate_bp=1600)
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        sub = ledger.billed_subscription(customer, old, days_ago=10)
        [line] = db.session.scalars(select(InvoiceLine).where(InvoiceLine.subscription_id == sub.id))
        # What the customer owes for the period in the end, whichever went first: the old plan's used days. (A
        # plan change credits the old plan's unused days and charges the new plan's; the cancellation then
        # credits the new plan's.)
        unused = min(line.amount_cents, prorate(line.unit_price_cents, (line.period_end - today()).days,
                                                line.period_days))
        owed = line.amount_cents + line.tax_cents - unused - tax_on(unused, line.tax_rate_bp)

        outcome = race(server, headers, [cancel(sub.id), change_plan(sub.id, new.id)] * (N // 2))
        tally(outcome)

        assert_clean(outcome, {"cancel": {200} | REFUSED, "change_plan": {200} | REFUSED})
        assert len(outcome.ok("cancel")) == 1, outcome.evidence()
        assert len(outcome.ok("change_plan")) <= 1, outcome.evidence()
        after = ledger.fresh(Subscription, sub.id)
        assert after.status == "cancelled"
        net = ledger.billed_cents(sub.id) - ledger.credited_cents(sub.id)
        assert net == owed, f"owes {net} for the period, should owe {owed}\n{outcome.evidence()}"
        assert len(ledger.credit_notes("cancellation", subscription_id=sub.id)) == 1, outcome.evidence()
        changes = ledger.audit_ids("subscription.change_plan", "subscriptions", sub.id)
        assert len(changes) == len(outcome.ok("change_plan")), outcome.evidence()
        assert len(ledger.credit_notes("plan_change", subscription_id=sub.id)) == len(changes), outcome.evidence()
        cancels = ledger.audit_ids("subscription.cancel", "subscriptions", sub.id)
        assert len(cancels) == 1 and all(c < cancels[0] for c in changes), "a plan changed after its cancellation"
        assert after.plan_id == (new.id if changes else old.id)
        assert_ledger_sound(outcome)


def test_a_plan_change_then_a_cancellation_on_a_period_s_first_day_credit_what_was_billed(app):
    """The pair above one after the other, on the first day of a billed period: not a race, a rule."""
    old, new = PlanFactory(monthly_price_cents=4900, tax_rate_bp=1600), PlanFactory(monthly_price_cents=7900,
                                                                                     tax_rate_bp=1600)
    sub = ledger.billed_subscription(CustomerFactory(), old)

    subscription_service.change_plan(sub.id, new.id)
    db.session.commit()
    subscription_service.cancel(sub.id, today())
    db.session.commit()

    # Cancelled on the period's first day: everything charged for it (old plan, then the new one) comes back once.
    assert ledger.credited_cents(sub.id) == ledger.billed_cents(sub.id) == 5684 + 9164


def test_a_draft_edited_while_it_is_issued_keeps_the_lines_it_was_issued_with(app, server, headers, tally):
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        invoice = ledger.draft(customer.id, 10000)

        outcome = race(server, headers, [r for n in range(N // 2) for r in (issue(invoice.id), edit(invoice.id, n))])
        tally(outcome)

        assert_clean(outcome, {"issue": {200} | REFUSED, "edit": {200} | REFUSED})
        assert len(outcome.ok("issue")) == 1, outcome.evidence()
        issued = outcome.ok("issue")[0]
        after = ledger.fresh(Invoice, invoice.id)
        lines = [(line.description, line.amount_cents) for line in db.session.scalars(
            select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id).order_by(InvoiceLine.id))]
        assert after.status == "open" and after.number, outcome.evidence()
        assert lines == [(line["description"], line["amount_cents"]) for line in issued.data["lines"]], \
            f"lines now {lines}, issued with {issued.data['lines']}\n{outcome.evidence()}"
        assert after.total_cents == issued.data["total_cents"], outcome.evidence()
        issues = ledger.audit_ids("invoice.issue", "invoices", invoice.id)
        assert len(issues) == 1, f"{len(issues)} invoice.issue events\n{outcome.evidence()}"
        issue_event = issues[0]
        edits = ledger.audit_ids("invoice.update_draft", "invoices", invoice.id)
        assert len(edits) == len(outcome.ok("edit")), outcome.evidence()
        assert all(e < issue_event for e in edits), f"update_draft after invoice.issue\n{outcome.evidence()}"
        assert all(a.data["status"] == "draft" for a in outcome.ok("edit")), outcome.evidence()
        assert_ledger_sound(outcome)


def test_a_draft_deleted_while_it_is_issued_is_either_issued_or_gone(app, server, headers, tally):
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        invoice_id = ledger.draft(customer.id, 10000).id  # an id: the row may be gone after the race

        outcome = race(server, headers, [issue(invoice_id), delete(invoice_id)] * (N // 2))
        tally(outcome)

        assert_clean(outcome, {"issue": {200, 404} | REFUSED, "delete": {200, 404} | REFUSED})
        winners = outcome.ok("issue") + outcome.ok("delete")
        assert len(winners) == 1, outcome.evidence()
        after = ledger.fresh(Invoice, invoice_id)
        issued = ledger.audit_ids("invoice.issue", "invoices", invoice_id)
        deleted = ledger.audit_ids("invoice.delete_draft", "invoices", invoice_id)
        if winners[0].label == "issue":
            assert after is not None and after.status == "open" and after.number, outcome.evidence()
            assert (len(issued), deleted) == (1, []), outcome.evidence()
        else:
            assert after is None, outcome.evidence()
            assert (issued, len(deleted)) == ([], 1), outcome.evidence()
        assert_ledger_sound(outcome)


def test_a_draft_edited_while_it_is_deleted_is_gone_with_every_edit_before_it(app, server, headers, tally):
    for _ in range(ROUNDS):
        customer = CustomerFactory()
        invoice_id = ledger.draft(customer.id, 10000).id

        outcome = race(server, headers, [r for n in range(N // 2) for r in (edit(invoice_id, n), delete(invoice_id))])
        tally(outcome)

        assert_clean(outcome, {"edit": {200, 404} | REFUSED, "delete": {200, 404} | REFUSED})
        assert len(outcome.ok("delete")) == 1, outcome.evidence()
        assert ledger.fresh(Invoice, invoice_id) is None, outcome.evidence()
        assert db.session.scalars(select(InvoiceLine.id).where(InvoiceLine.invoice_id == invoice_id)).all() == []
        edits = ledger.audit_ids("invoice.update_draft", "invoices", invoice_id)
        [deleted] = ledger.audit_ids("invoice.delete_draft", "invoices", invoice_id)
        assert len(edits) == len(outcome.ok("edit")) and all(e < deleted for e in edits), outcome.evidence()
        assert_ledger_sound(outcome)

"""Issue 16's billing defects, as staff meet them on the pages: a payment recorded twice, a plan change that
moves money without saying so (or by support staff), a cancellation's end date, invoice lines that say
"subscription #289", and a void that leaves no way to bill the periods again."""
from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CreditNote, Invoice, InvoiceLine, Payment, Plan, Subscription
from isp_admin.services.billing.reconcile import reconcile
from isp_admin.services.platform.clock import today
from tests.factories import PlanFactory
from tests.web.billing_world import billed_customer


def text_of(response) -> str:
    return response.get_data(as_text=True)


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def month_start() -> date:
    return today().replace(day=1)


@pytest.fixture
def billed_this_month():
    """A customer whose subscription (PPPoE zoe.obrien, Home 50 at $39.00 + 16 %) is billed for this month."""
    customer, invoice = billed_customer(price=3900, start=month_start(), billing_day=1)
    sub = db.session.scalar(select(Subscription).where(Subscription.customer_id == customer.id))
    sub.pppoe_username = "zoe.obrien"
    db.session.get(Plan, sub.plan_id).name = "Home 50"
    db.session.commit()
    return customer, invoice, sub


# --- recording a payment twice -------------------------------------------------------------------------------

def pay(client, customer, key: str, **fields):
    data = {"customer_id": customer.id, "idempotency_key": key, "amount_cents": "24.70", "method": "bank_transfer",
            "received_on": today().isoformat(), "reference": "TRX-889", **fields}
    return client.post("/payments/new", data=data)


def test_the_same_money_recorded_again_is_held_back_until_staff_say_it_is_other_money(client, login):
    customer, _ = billed_customer()
    login("billing")
    assert pay(client, customer, "first-form").status_code == 302

    # Back, then Record again: the browser re-fetched the form, so it carries a new key.
    again = pay(client, customer, "form-after-back", reference="trx-889")

    assert again.status_code == 422
    page = text_of(again)
    assert "This looks like a payment already recorded" in page
    first = db.session.scalar(select(Payment))
    assert f'href="/payments/{first.id}"' in page and "TRX-889" in page
    assert 'name="confirm_duplicate"' in page
    assert count(Payment) == 1

    confirmed = pay(client, customer, "form-after-back", reference="trx-889", confirm_duplicate="y")

    assert confirmed.status_code == 302
    assert count(Payment) == 2


def test_a_form_sent_twice_with_its_key_is_recorded_once_without_a_warning(client, login):
    customer, _ = billed_customer()
    login("billing")
    assert pay(client, customer, "one-key").status_code == 302
    replay = pay(client, customer, "one-key")
    assert replay.status_code == 302
    assert "already recorded (the form was sent twice)" in text_of(client.get(replay.headers["Location"]))
    assert count(Payment) == 1


@pytest.mark.parametrize(("changes", "warned"), [
    ({"reference": ""}, False),                                 # no reference now: a different received date
    ({"amount_cents": "24.71"}, False),                         # another amount
    ({"reference": "TRX-890"}, False),                          # another reference
    ({"reference": "", "method": "cash"}, False),
    ({"reference": "  trx-889 "}, True),                        # the same reference, however typed
], ids=["no-ref-other-day", "other-amount", "other-ref", "no-ref-cash", "same-ref-spaced"])
def test_what_counts_as_the_same_payment(client, login, changes, warned):
    customer, _ = billed_customer()
    login("billing")
    yesterday = (today() - timedelta(days=1)).isoformat()
    assert pay(client, customer, "k1", received_on=yesterday).status_code == 302

    response = pay(client, customer, "k2", **changes)

    assert (response.status_code == 422) is warned
    assert count(Payment) == (1 if warned else 2)


def test_no_reference_on_the_same_day_is_a_likely_duplicate(client, login):
    customer, _ = billed_customer()
    login("billing")
    assert pay(client, customer, "k1", reference="").status_code == 302
    response = pay(client, customer, "k2", reference="")
    assert response.status_code == 422 and "date received, without a reference" in text_of(response)
    assert count(Payment) == 1


def test_a_reversed_payment_or_another_customers_is_not_a_duplicate(client, login):
    customer, _ = billed_customer()
    other, _ = billed_customer()
    login("billing")
    assert pay(client, other, "theirs").status_code == 302
    assert pay(client, customer, "bounced").status_code == 302
    bounced = db.session.scalar(select(Payment).where(Payment.customer_id == customer.id))
    assert client.post(f"/payments/{bounced.id}/reverse", data={"reason": "Bounced"}).status_code == 302

    assert pay(client, customer, "again").status_code == 302
    assert count(Payment) == 3


@pytest.mark.parametrize("value", ["\x00", "x" * 10_000, "0", ""])
def test_hostile_confirmations_are_no_500(client, login, value):
    customer, _ = billed_customer()
    login("billing")
    assert pay(client, customer, "k1").status_code == 302
    response = pay(client, customer, "k2", confirm_duplicate=value)
    assert response.status_code in (302, 400, 422)  # a NUL byte is refused before any view (400)


# --- a plan change that moves money ---------------------------------------------------------------------------

def documents() -> tuple[int, int]:
    return count(Invoice), count(CreditNote)


def amounts_on(page: str) -> str:
    return re.search(r'name="amounts" value="([^"]*)"', page).group(1)


def test_a_plan_change_shows_its_amounts_first_and_issues_exactly_them_when_confirmed(client, login,
                                                                                       billed_this_month):
    customer, _, sub = billed_this_month
    fibre = PlanFactory(name="Fibre 300", monthly_price_cents=7900, tax_rate_bp=1600)
    login("billing")
    before = documents()

    preview = client.post(f"/subscriptions/{sub.id}/change-plan", data={"plan_id": fibre.id})

    assert preview.status_code == 200
    page = text_of(preview)
    assert "Check the amounts" in page and "Nothing is issued until you confirm" in page
    assert documents() == before
    db.session.refresh(sub)
    assert sub.plan_id != fibre.id
    shown = re.findall(r'<td class="text-end text-nowrap fw-semibold">(?:− )?(\$[\d,.]+)</td>', page)
    assert len(shown) == 2

    done = client.post(f"/subscriptions/{sub.id}/change-plan",
                       data={"plan_id": fibre.id, "confirm": "1", "amounts": amounts_on(page)})

    assert done.status_code == 302
    invoice = db.session.scalar(select(Invoice).order_by(Invoice.id.desc()))
    note = db.session.scalar(select(CreditNote))
    assert shown == [f"${invoice.total_cents / 100:,.2f}", f"${note.amount_cents / 100:,.2f}"]
    flashed = text_of(client.get(done.headers["Location"]))
    assert (f'Plan changed to Fibre 300. Invoice <a href="/invoices/{invoice.id}">{invoice.number}</a> for '
            f"${invoice.total_cents / 100:,.2f}") in flashed
    assert note.number in flashed and f"${note.amount_cents / 100:,.2f} issued." in flashed
    [line] = db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id))
    assert line.description.startswith("Fibre 300 · zoe.obrien, ") and "plan change" in line.description
    assert "(Home 50 · zoe.obrien)" in note.reason
    assert reconcile() == []


def test_amounts_that_changed_since_the_preview_are_not_issued(client, login, billed_this_month):
    _, _, sub = billed_this_month
    fibre = PlanFactory(name="Fibre 300", monthly_price_cents=7900)
    login("billing")
    page = text_of(client.post(f"/subscriptions/{sub.id}/change-plan", data={"plan_id": fibre.id}))
    fibre.monthly_price_cents = 9900  # repriced by someone else meanwhile
    db.session.commit()
    before = documents()

    stale = client.post(f"/subscriptions/{sub.id}/change-plan",
                        data={"plan_id": fibre.id, "confirm": "1", "amounts": amounts_on(page)})

    assert stale.status_code == 422 and "The amounts changed since you checked them" in text_of(stale)
    assert documents() == before
    db.session.refresh(sub)
    assert sub.plan_id != fibre.id


@pytest.mark.parametrize("amounts", ["\x00", "x" * 600, "invoice:1:1"])
def test_hostile_confirmed_amounts_issue_nothing(client, login, billed_this_month, amounts):
    _, _, sub = billed_this_month
    fibre = PlanFactory()
    login("billing")
    before = documents()
    response = client.post(f"/subscriptions/{sub.id}/change-plan",
                           data={"plan_id": fibre.id, "confirm": "1", "amounts": amounts})
    assert response.status_code in (400, 422)  # a NUL byte is refused before any view (400)
    assert documents() == before


def test_support_may_not_change_a_billed_plan_but_is_told_why(client, login, billed_this_month):
    _, _, sub = billed_this_month
    fibre = PlanFactory(name="Fibre 300")
    login("support")
    page = text_of(client.get(f"/subscriptions/{sub.id}"))
    assert "needs billing staff" in page
    before = documents()

    for data in ({"plan_id": fibre.id}, {"plan_id": fibre.id, "confirm": "1", "amounts": "anything"}):
        response = client.post(f"/subscriptions/{sub.id}/change-plan", data=data)
        assert response.status_code == 403
        refusal = text_of(response)
        assert "This plan change would issue an invoice for $" in refusal and "and a credit note for $" in refusal
        assert "billing staff" in refusal

    assert documents() == before
    db.session.refresh(sub)
    assert sub.plan_id != fibre.id
    assert db.session.scalar(select(AuditEvent.id).where(AuditEvent.action == "subscription.change_plan")) is None


def test_support_may_change_a_plan_whose_period_is_not_billed(client, login):
    customer, _ = billed_customer()  # billed for January only: the current period is not billed yet
    sub = db.session.scalar(select(Subscription).where(Subscription.customer_id == customer.id))
    fibre = PlanFactory(name="Fibre 300")
    login("support")

    response = client.post(f"/subscriptions/{sub.id}/change-plan", data={"plan_id": fibre.id})

    assert response.status_code == 302
    assert "No invoice or credit note was issued" in text_of(client.get(response.headers["Location"]))
    db.session.refresh(sub)
    assert sub.plan_id == fibre.id


# --- cancelling: the end date is the first day without service -----------------------------------------------

def test_a_cancellation_says_what_its_date_means_and_shows_its_credit_first(client, login, billed_this_month):
    _, _, sub = billed_this_month
    login("support")
    page = text_of(client.get(f"/subscriptions/{sub.id}"))
    assert "First day without service" in page and "The customer pays up to the day before this date" in page

    preview = client.post(f"/subscriptions/{sub.id}/cancel", data={"end_date": today().isoformat()})

    assert preview.status_code == 200 and "Credit note" in text_of(preview)
    assert count(CreditNote) == 0
    done = client.post(f"/subscriptions/{sub.id}/cancel", data={
        "end_date": today().isoformat(), "confirm": "1", "amounts": amounts_on(text_of(preview))})
    assert done.status_code == 302
    note = db.session.scalar(select(CreditNote))
    days_left = (sub.next_bill_date - today()).days
    assert note.kind == "cancellation" and f"Unused {days_left} days, {today():%d %b %Y}" in note.reason
    after = text_of(client.get(done.headers["Location"]))
    assert f"{today():%d %b %Y} is its first day without service" in after and note.number in after
    assert "First day without service" in after


# --- invoice lines in words ----------------------------------------------------------------------------------

def test_invoice_lines_name_the_plan_and_the_login(client, login, billed_this_month):
    _, invoice, _ = billed_this_month
    login("readonly")
    invoice = db.session.get(Invoice, invoice.id)
    [line] = db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id))
    assert line.description.startswith("Plan ")  # billed before the rename, through the real run

    page = text_of(client.get(f"/invoices/{invoice.id}"))

    assert "subscription #" not in page
    assert ">Home 50 · zoe.obrien</a>" in page


def test_the_run_names_the_plan_and_the_login_on_new_lines(app):
    _, invoice = billed_customer(start=month_start(), billing_day=1)
    [line] = db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id))
    sub = db.session.get(Subscription, line.subscription_id)
    plan = db.session.get(Plan, sub.plan_id)
    assert line.description.startswith(f"{plan.name} · {sub.pppoe_username}, {month_start():%d %b %Y} – ")


# --- void, then bill again --------------------------------------------------------------------------------------

def test_the_void_form_says_what_happens_and_rebills_on_request(client, login, billed_this_month):
    customer, invoice, sub = billed_this_month
    login("billing")
    page = text_of(client.get(f"/invoices/{invoice.id}"))
    assert "Voiding does not make its periods due again" in page
    assert "Re-bill its periods now on a new invoice: $45.24" in page  # 39.00 + 16 %, at today's price
    assert "Home 50 · zoe.obrien, " in page.split('id="rebill-plan"')[1]

    response = client.post(f"/invoices/{invoice.id}/void", data={"reason": "Wrong name", "then": "rebill"})

    assert response.status_code == 302
    again = db.session.scalar(select(Invoice).where(Invoice.id != invoice.id))
    note = db.session.scalar(select(CreditNote))
    assert again.total_cents == 4524 and db.session.get(Invoice, invoice.id).status == "void"
    flashed = text_of(client.get(response.headers["Location"]))
    assert "credit note" in flashed and note.number in flashed
    assert f're-billed on invoice <a href="/invoices/{again.id}">{again.number}</a> for $45.24' in flashed
    assert reconcile() == []


def test_void_only_says_the_periods_are_not_billed_again(client, login, billed_this_month):
    _, invoice, _ = billed_this_month
    login("billing")
    response = client.post(f"/invoices/{invoice.id}/void", data={"reason": "Goodwill"})
    assert response.status_code == 302
    assert "Its periods are not billed again." in text_of(client.get(response.headers["Location"]))
    assert count(Invoice) == 1


@pytest.mark.parametrize("then", ["\x00", "later", "x" * 10_000])
def test_an_unknown_void_choice_is_refused(client, login, billed_this_month, then):
    _, invoice, _ = billed_this_month
    login("billing")
    response = client.post(f"/invoices/{invoice.id}/void", data={"reason": "Wrong", "then": then})
    assert response.status_code in (400, 422)
    assert db.session.get(Invoice, invoice.id).status == "open"


def test_the_invoice_page_runs_as_many_queries_for_six_subscriptions_as_for_one(app, client, login, query_counter):
    from isp_admin.services.billing import run as billing
    from tests.factories import CustomerFactory, SubscriptionFactory

    def invoice_with(subscriptions: int) -> int:
        customer = CustomerFactory()
        for _ in range(subscriptions):
            SubscriptionFactory(customer=customer, plan=PlanFactory(), start_date=month_start(), billing_day=1,
                                next_bill_date=month_start(), billed_from=month_start())
        invoice = billing.generate_invoice_for_customer(customer.id, month_start())
        db.session.commit()
        return invoice.id

    login("billing")  # who may void: the page also plans the re-billing
    counts = []
    for invoice_id in (invoice_with(1), invoice_with(6)):
        with app.app_context(), query_counter() as statements:
            page = text_of(client.get(f"/invoices/{invoice_id}"))
        assert "Re-bill its periods now on a new invoice" in page
        counts.append(len(statements))
    assert counts[0] == counts[1], counts

"""Payments: staff record money (once, however often the form is sent), see where it went, reverse it; and a
customer's balance card and statement add up."""
from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Customer, Payment, PaymentAllocation
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.billing import ledger
from isp_admin.services.billing import payments as payment_service
from isp_admin.services.billing import queries as invoice_queries
from isp_admin.services.billing import run as billing
from isp_admin.services.platform.clock import today
from isp_admin.services.sample_data import generator as test_data
from tests.factories import CustomerFactory
from tests.web.billing_world import START, billed_customer

KEY = re.compile(r'name="idempotency_key" type="hidden" value="([0-9a-f]{32})"')


def text_of(response) -> str:
    return response.get_data(as_text=True)


def payments() -> list[Payment]:
    return list(db.session.scalars(select(Payment).order_by(Payment.id)))


@pytest.fixture
def two_invoices():
    """A customer owing 24.70 (January, prorated) and 34.80 (February, a full month)."""
    customer, january = billed_customer(price=3000, tax_bp=1600)
    february = billing.generate_invoice_for_customer(customer.id, date(2026, 2, 1))
    db.session.commit()
    assert (january.total_cents, february.total_cents) == (2470, 3480)
    return customer, january, february


def payment_form(client, customer_id: int, **fields) -> dict:
    """GET the form (which makes the one-time key) and return what submitting it would post."""
    page = text_of(client.get(f"/payments/new?customer_id={customer_id}"))
    return {"customer_id": str(customer_id), "idempotency_key": KEY.search(page).group(1), "method": "cash",
            "received_on": today().isoformat(), "reference": "", "invoice_id": "", **fields}


# --- recording ----------------------------------------------------------------------------------------------------


def test_a_payment_pays_the_oldest_invoice_first_and_keeps_the_rest_as_credit(client, login, two_invoices):
    customer, january, february = two_invoices
    login("billing")

    response = client.post("/payments/new", data=payment_form(client, customer.id, amount_cents="60.00",
                                                               reference="RCPT-9"))

    [payment] = payments()
    assert response.headers["Location"].endswith(f"/payments/{payment.id}")
    assert (payment.amount_cents, payment.method, payment.reference) == (6000, "cash", "RCPT-9")
    allocations = db.session.execute(select(PaymentAllocation.invoice_id, PaymentAllocation.amount_cents)
                                     .order_by(PaymentAllocation.id)).all()
    assert allocations == [(january.id, 2470), (february.id, 3480)]
    db.session.refresh(january), db.session.refresh(february)
    assert january.status == february.status == "paid"
    page = text_of(client.get(response.headers["Location"]))
    assert "Payment recorded and applied to 2 invoices. $0.50 is kept as credit." in page
    assert re.search(r'id="payment-credit">\$0\.50<', page)
    assert january.number in page and february.number in page
    assert re.search(r'id="balance-credit">\$0\.50<', text_of(client.get(f"/customers/{customer.id}")))


def test_a_named_invoice_is_paid_first(client, login, two_invoices):
    customer, january, february = two_invoices
    login("billing")
    form = text_of(client.get(f"/payments/new?customer_id={customer.id}&invoice_id={february.id}"))
    assert f'<option selected value="{february.id}">' in form

    client.post("/payments/new", data=payment_form(client, customer.id, amount_cents="30.00",
                                                   invoice_id=str(february.id)))

    db.session.refresh(january), db.session.refresh(february)
    assert (january.amount_paid_cents, february.amount_paid_cents) == (0, 3000)


def test_the_same_form_posted_twice_records_one_payment(client, login, two_invoices):
    customer, january, _ = two_invoices
    login("billing")
    data = payment_form(client, customer.id, amount_cents="24.70", invoice_id=str(january.id))

    first = client.post("/payments/new", data=data)
    second = client.post("/payments/new", data=data)

    [payment] = payments()
    assert first.headers["Location"] == second.headers["Location"] == f"/payments/{payment.id}"
    assert "already recorded" in text_of(client.get(second.headers["Location"]))
    assert db.session.scalar(select(func.count()).select_from(PaymentAllocation)) == 1
    assert db.session.scalar(select(func.count()).where(AuditEvent.action == "payment.record")) == 1
    fresh = payment_form(client, customer.id, amount_cents="24.70")
    assert fresh["idempotency_key"] != data["idempotency_key"]  # each form shown is a new payment


@pytest.mark.parametrize(("field", "value", "message"), [
    ("amount_cents", "-5.00", "cannot be negative"),
    ("amount_cents", "abc", "Enter an amount such as 29.99."),
    ("amount_cents", "0", "An amount above zero."),
    ("amount_cents", "", "Enter the amount received."),
    ("received_on", "2999-01-01", "cannot be received in the future"),
    ("received_on", "2026-02-30", "Not a valid date value."),
    ("invoice_id", "999999", "Not found for this customer."),
    ("invoice_id", "other", "Not found for this customer."),
    ("invoice_id", "abc", "Choose an invoice from the list."),
    ("method", "cheque", "Not a valid choice."),
    ("idempotency_key", "", "Reload the form and try again."),
])
def test_bad_input_is_a_form_error_saves_nothing_and_keeps_what_was_typed(
        client, login, two_invoices, field, value, message):
    customer, *_ = two_invoices
    _, other_invoice = billed_customer()
    login("billing")
    value = str(other_invoice.id) if value == "other" else value
    data = payment_form(client, customer.id, **{"amount_cents": "12.34", "reference": "KEEP-ME", field: value})

    response = client.post("/payments/new", data=data)

    assert response.status_code == 422
    assert message in text_of(response)
    assert 'value="KEEP-ME"' in text_of(response)
    assert payments() == []


def test_recording_needs_a_customer_first(client, login):
    customer = CustomerFactory(account_number="C12345678")
    login("billing")
    assert "Who paid?" in text_of(client.get("/payments/new"))
    assert "No customer has that id or account number." in text_of(client.get("/payments/new?customer=C999"))
    response = client.get("/payments/new?customer=c12345678")
    assert response.headers["Location"].endswith(f"/payments/new?customer_id={customer.id}")
    assert client.get("/payments/new?customer_id=999999").status_code == 404


# --- reversing ----------------------------------------------------------------------------------------------------


def test_reversing_a_payment_reopens_its_invoices(client, login, two_invoices):
    customer, january, february = two_invoices
    payment, _ = payment_service.record_payment(customer.id, 5950, "bank_transfer", today(), today())
    db.session.commit()
    login("billing")
    assert client.post(f"/payments/{payment.id}/reverse", data={"reason": ""}).status_code == 422
    assert payments()[0].status == "completed"

    response = client.post(f"/payments/{payment.id}/reverse", data={"reason": "Transfer bounced"})

    assert response.status_code == 302
    db.session.refresh(payment), db.session.refresh(january), db.session.refresh(february)
    assert payment.status == "reversed" and payment.reversal_reason == "Transfer bounced"
    assert january.amount_paid_cents == february.amount_paid_cents == 0
    assert {january.status, february.status} <= {"open", "overdue"} and january.status != "paid"
    page = text_of(client.get(f"/payments/{payment.id}"))
    assert "Transfer bounced" in page and "Reverse payment" not in page and "undone" in page
    assert "payment.reverse" in page.split("History", 1)[1]


# --- the list -----------------------------------------------------------------------------------------------------


def listed_ids(client, query: str = "") -> list[int]:
    response = client.get(f"/payments/?{query}")
    assert response.status_code == 200
    return [int(i) for i in re.findall(r'<a href="/payments/(\d+)">#', text_of(response))]


def test_payment_filters_narrow_the_list(client, login, two_invoices):
    customer, *_ = two_invoices
    other = CustomerFactory(account_number="C55555555")
    cash, _ = payment_service.record_payment(customer.id, 1000, "cash", date(2026, 3, 1), today())
    card, _ = payment_service.record_payment(other.id, 2000, "card", date(2026, 5, 1), today())
    bounced, _ = payment_service.record_payment(other.id, 3000, "bank_transfer", date(2026, 7, 1), today())
    payment_service.reverse_payment(bounced.id, "Bounced", today())
    db.session.commit()
    login("readonly")

    assert listed_ids(client) == [bounced.id, card.id, cash.id]
    assert listed_ids(client, "method=card") == [card.id]
    assert listed_ids(client, "status=reversed") == [bounced.id]
    assert listed_ids(client, "customer=C55555555") == [bounced.id, card.id]
    assert listed_ids(client, f"customer={customer.id}") == [cash.id]
    assert listed_ids(client, "received_from=2026-04-01&received_to=2026-06-01") == [card.id]
    assert "No payments match" in text_of(client.get("/payments/?method=mobile_money"))
    assert client.get("/payments/?received_from=nonsense").status_code == 400


def test_an_empty_payment_list_has_an_empty_state(client, login):
    login("billing")
    assert "No payments yet" in text_of(client.get("/payments/"))


def test_the_payment_list_runs_the_same_queries_at_any_page_size_or_table_size(app, client, login, query_counter):
    login("readonly")
    test_data.generate(30, seed=5)
    db.session.commit()
    ids = list(db.session.scalars(select(Customer.id).order_by(Customer.id)))

    def record(n: int) -> None:
        for customer_id in ids[:n]:
            payment_service.record_payment(customer_id, 1500, "cash", today(), today())
        db.session.commit()

    def measure() -> dict[str, int]:
        counts = {}
        for url in ("/payments/?size=1", "/payments/?size=100", "/payments/?method=cash",
                    f"/payments/?customer={ids[0]}&received_from=2026-01-01"):
            with app.app_context(), query_counter() as statements:
                assert client.get(url).status_code == 200
            counts[url] = len(statements)
        return counts

    record(2)
    small = measure()
    record(30)
    large = measure()
    assert set(small.values()) == set(large.values()) == {3}, (small, large)


# --- the customer's balance and statement ----------------------------------------------------------------------------


def test_the_statement_runs_a_balance_through_invoice_payment_credit_note_and_reversal(client, login):
    customer = CustomerFactory()
    draft = invoice_service.create_draft(customer.id, [{"description": "Install", "unit_price_cents": 10000}],
                                         today())
    invoice_service.issue(draft.id, today())
    payment, _ = payment_service.record_payment(customer.id, 6000, "cash", today(), today())
    invoice_service._credit_note(customer.id, "manual", "Goodwill", 1000, 0, today())
    ledger.apply_available_credit(customer.id, today())
    db.session.commit()
    login("readonly")

    page = text_of(client.get(f"/customers/{customer.id}/statement"))

    running = re.findall(r'running-balance">([^<]+)<', page)
    assert running == ["$100.00", "$40.00", "$30.00"]
    assert re.search(r'id="opening-balance">\$0\.00<', page) and re.search(r'id="closing-balance">\$30\.00<', page)
    assert ledger.customer_balance(customer.id, today()).net_cents == 3000

    payment_service.reverse_payment(payment.id, "Bounced", today())
    db.session.commit()
    page = text_of(client.get(f"/customers/{customer.id}/statement"))
    assert re.findall(r'running-balance">([^<]+)<', page) == ["$100.00", "$40.00", "$30.00", "$90.00"]
    assert "Reversal of payment" in page

    tomorrow = (today() + timedelta(days=1)).isoformat()
    later = text_of(client.get(f"/customers/{customer.id}/statement?start={tomorrow}&end={tomorrow}"))
    assert re.search(r'id="opening-balance">\$90\.00<', later) and "Nothing in this period" in later
    assert client.get(f"/customers/{customer.id}/statement?start=2026-05-01&end=2026-04-01").status_code == 400


def test_the_statement_is_bounded(client, login):
    customer = CustomerFactory()
    for _ in range(4):
        payment_service.record_payment(customer.id, 100, "cash", today(), today())
    db.session.commit()
    statement = invoice_queries.statement(customer.id, today(), today(), limit=3)
    assert statement.truncated and [r["running_cents"] for r in statement.rows] == [-100, -200, -300]


def test_the_balance_card_matches_the_ledger(client, login, two_invoices):
    customer, january, _ = two_invoices
    payment_service.record_payment(customer.id, 1000, "cash", START, today())
    invoice_service._credit_note(customer.id, "manual", "Goodwill", 500, 0, today())
    db.session.commit()
    login("billing")

    page = text_of(client.get(f"/customers/{customer.id}"))

    expected = ledger.customer_balance(customer.id, today())
    overview = invoice_queries.account_overview(customer.id, today())
    assert (overview.owed_cents, overview.overdue_cents, overview.credit_cents) == \
        (expected.owed_cents, expected.overdue_cents, expected.credit_cents) == (4950, 4950, 500)
    assert re.search(r'id="balance-owed">\$49\.50<', page) and re.search(r'id="balance-credit">\$5\.00<', page)
    assert january.number in page.split('id="recent-invoices"', 1)[1]
    assert "$10.00" in page.split('id="recent-payments"', 1)[1]
    for link in ("/payments/new?customer_id=", "/statement", "/generate-invoice"):
        assert link in page

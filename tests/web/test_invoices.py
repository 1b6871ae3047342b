"""Invoices: staff find them, read how every amount was computed, write drafts, issue, void, send, bill now."""
from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CreditNote, Invoice, InvoiceLine, Notification
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.billing import payments as payment_service
from isp_admin.services.billing import run as billing
from isp_admin.services.platform.clock import today
from isp_admin.services.sample_data import generator as test_data
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.web.billing_world import START, billed_customer

LISTED = re.compile(r"<code>(INV-\d{4}-\d{6}|Draft #\d+)</code>")


def text_of(response) -> str:
    return response.get_data(as_text=True)


def listed(client, query: str = "") -> list[str]:
    response = client.get(f"/invoices/?{query}")
    assert response.status_code == 200, text_of(response)[:500]
    return LISTED.findall(text_of(response))


def count(model, *where) -> int:
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


@pytest.fixture
def ledger():
    """Four invoices that differ in every filterable way: open, paid, void, and a draft."""
    a, open_invoice = billed_customer(account_number="CA0000001", name="Amina Otieno")           # 24.70, Jan
    b, paid = billed_customer(price=5000, start=date(2026, 3, 1), account_number="CB0000002")  # 58.00, Mar
    _, voided = billed_customer(price=1000, start=date(2026, 6, 5), billing_day=5)            # 11.60, Jun
    payment_service.record_payment(b.id, paid.total_cents, "cash", today(), today())
    invoice_service.void(voided.id, "Wrong plan", today())
    draft = invoice_service.create_draft(a.id, [{"description": "Router", "quantity": 1,
                                                  "unit_price_cents": 9900, "tax_rate_bp": 1600}], today())
    db.session.commit()
    return {"a": a, "b": b, "open": open_invoice.number, "paid": paid.number, "void": voided.number,
            "draft": f"Draft #{draft.id}"}


# --- the list -------------------------------------------------------------------------------------------------


def test_every_filter_and_the_search_narrow_the_list(client, login, ledger):
    login("readonly")
    everything = {ledger[k] for k in ("open", "paid", "void", "draft")}
    assert set(listed(client)) == everything
    assert listed(client) == sorted(listed(client), key=lambda n: n.startswith("INV"))  # newest (the draft) first

    assert listed(client, "status=paid") == [ledger["paid"]]
    assert listed(client, "status=void") == [ledger["void"]]
    assert listed(client, "status=draft") == [ledger["draft"]]
    assert listed(client, "status=open") == [ledger["open"]]
    assert listed(client, f"customer={ledger['b'].account_number}") == [ledger["paid"]]
    assert listed(client, f"customer={ledger['b'].account_number.lower()}") == [ledger["paid"]]
    assert set(listed(client, f"customer={ledger['a'].id}")) == {ledger["open"], ledger["draft"]}
    assert listed(client, "customer=C-NOBODY") == []
    assert listed(client, "issued_from=2026-02-01&issued_to=2026-04-01") == [ledger["paid"]]
    assert listed(client, "due_from=2026-06-01&due_to=2026-07-01") == [ledger["void"]]
    assert listed(client, "min_total=20.00&max_total=30") == [ledger["open"]]
    assert listed(client, "min_total=100") == [ledger["draft"]]
    assert listed(client, f"number={ledger['paid'][-6:]}") == [ledger["paid"]]
    assert listed(client, f"number={ledger['paid'].lower()}") == [ledger["paid"]]
    assert listed(client, "number=inv-") == listed(client, "number=INV-")  # case does not matter
    assert len(listed(client, "number=INV-")) == 3  # drafts have no number


def test_an_empty_result_says_so_and_offers_to_clear_the_filters(client, login, ledger):
    login("readonly")
    page = text_of(client.get("/invoices/?status=overdue"))
    assert "No invoices match" in page and 'href="/invoices/"' in page


def test_an_empty_table_has_its_own_empty_state(client, login):
    login("readonly")
    assert "No invoices yet" in text_of(client.get("/invoices/"))


@pytest.mark.parametrize("query", ["issued_from=2026-02-31", "min_total=abc", "max_total=-5", "status=bogus",
                                   "issued_from=yesterday", "after=not-a-cursor"])
def test_bad_filters_are_a_4xx_with_the_form_kept_never_a_500(client, login, query):
    login("readonly")
    response = client.get(f"/invoices/?{query}&number=0001")
    assert 400 <= response.status_code < 500
    assert 'value="0001"' in text_of(response) or "after=" in query


def test_pages_walk_forward_and_back_by_cursor(client, login, ledger):
    login("readonly")
    first = text_of(client.get("/invoices/?size=3"))
    assert len(LISTED.findall(first)) == 3
    after = re.search(r'href="([^"]*after=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = text_of(client.get(after))
    assert LISTED.findall(second) == [ledger["open"]]
    before = re.search(r'href="([^"]*before=[^"]+)"', second).group(1).replace("&amp;", "&")
    assert LISTED.findall(text_of(client.get(before))) == LISTED.findall(first)


def queries_for(app, client, query_counter, url: str) -> int:
    with app.app_context(), query_counter() as statements:
        response = client.get(url)
    assert response.status_code == 200 and "No invoices" not in text_of(response), url
    return len(statements)


def test_the_list_runs_the_same_few_queries_at_any_page_size_table_size_or_filter(
        app, client, login, query_counter, ledger):
    login("readonly")
    urls = ["/invoices/?size=1", "/invoices/?size=50", "/invoices/?size=200", "/invoices/?status=open",
            f"/invoices/?customer={ledger['a'].account_number}&min_total=1",
            "/invoices/?number=INV&due_from=2026-01-01"]
    small = {url: queries_for(app, client, query_counter, url) for url in urls}
    test_data.generate(40, seed=3)
    as_of = today() + timedelta(days=35)
    due = billing.customers_due(as_of)
    billing.bill_customer_range(as_of, (due[0], due[-1]))
    db.session.commit()
    assert count(Invoice) > 30
    large = {url: queries_for(app, client, query_counter, url) for url in urls}

    # The signed-in user, the page, and its capped count: nothing grows with rows shown or stored.
    assert set(small.values()) == set(large.values()) == {3}, (small, large)


# --- the detail page --------------------------------------------------------------------------------------------


def test_the_invoice_page_explains_the_proration_and_the_tax_of_each_line(client, login):
    customer, invoice = billed_customer(price=3000, tax_bp=1600)
    login("readonly")

    page = text_of(client.get(f"/invoices/{invoice.id}"))

    [line] = db.session.scalars(select(InvoiceLine).where(InvoiceLine.invoice_id == invoice.id))
    assert (line.days, line.period_days, line.amount_cents, line.tax_cents) == (22, 31, 2129, 341)
    assert "3000 × 22/31 = 2129" in page
    assert "2129 × 16% = 341" in page
    assert f"{START} – 2026-01-31" in page
    assert "$21.29" in page and "$3.41" in page and "$24.70" in page
    assert invoice.number in page and customer.name in page
    assert "invoice.issue" in page.split("History", 1)[1]
    assert "Edit draft" not in page and "Delete draft" not in page  # issued invoices are never edited


def test_the_page_shows_payments_credit_emails_and_the_balance_that_results(client, login):
    customer, invoice = billed_customer(price=3000)
    payment, _ = payment_service.record_payment(customer.id, 1000, "bank_transfer", START, today(),
                                                reference="TRX-77")
    db.session.execute(Notification.__table__.update().where(Notification.invoice_id == invoice.id)
                       .values(status="failed", attempts=3, last_error="550 mailbox unavailable"))
    db.session.commit()
    login("readonly")

    page = text_of(client.get(f"/invoices/{invoice.id}"))

    assert f'href="/payments/{payment.id}"' in page and "TRX-77" in page
    assert re.search(r'id="invoice-balance">\$14\.70<', page)  # 24.70 − 10.00
    assert "550 mailbox unavailable" in page and "failed" in page.split("Emails about this invoice", 1)[1]


def test_an_unknown_invoice_is_a_404(client, login):
    login("readonly")
    assert client.get("/invoices/999999").status_code == 404
    assert client.get("/invoices/999999.pdf").status_code == 404


def test_the_pdf_downloads(client, login):
    _, invoice = billed_customer()
    login("readonly")
    response = client.get(f"/invoices/{invoice.id}.pdf")
    assert response.status_code == 200 and response.mimetype == "application/pdf"
    assert response.data.startswith(b"%PDF") and invoice.number in response.headers["Content-Disposition"]


# --- drafts, issue, void -------------------------------------------------------------------------------------------


def draft_form(*lines: tuple[str, str, str, str]) -> dict:
    data = {}
    for index, (description, quantity, price, tax) in enumerate(lines):
        data |= {f"lines-{index}-description": description, f"lines-{index}-quantity": quantity,
                 f"lines-{index}-unit_price_cents": price, f"lines-{index}-tax_rate_bp": tax}
    return data


def test_a_draft_is_written_edited_issued_and_then_never_edited(client, login):
    customer = CustomerFactory()
    login("billing")

    response = client.post(f"/customers/{customer.id}/invoices/new",
                           data=draft_form(("Router", "2", "45.50", "16"), ("Cable", "1", "3", "7.5")))

    assert response.status_code == 302
    draft = db.session.scalar(select(Invoice).where(Invoice.customer_id == customer.id))
    assert (draft.status, draft.number) == ("draft", None)
    assert (draft.subtotal_cents, draft.tax_cents) == (9100 + 300, 1456 + 23)
    page = text_of(client.get(f"/invoices/{draft.id}/edit"))
    assert 'value="45.50"' in page and 'value="7.5"' in page

    assert client.post(f"/invoices/{draft.id}/edit", data=draft_form(("Router", "1", "45.50", "16"))).status_code == 302
    db.session.refresh(draft)
    assert draft.total_cents == 4550 + 728 and count(InvoiceLine, InvoiceLine.invoice_id == draft.id) == 1

    assert client.post(f"/invoices/{draft.id}/issue").status_code == 302
    db.session.refresh(draft)
    assert draft.status == "open" and re.fullmatch(r"INV-\d{4}-000001", draft.number)
    page = text_of(client.get(f"/invoices/{draft.id}"))
    assert "Invoice issued." in page and "Edit draft" not in page and "Void invoice" in page
    response = client.post(f"/invoices/{draft.id}/edit", data=draft_form(("Sneaky", "1", "1.00", "0")))
    assert response.status_code == 302
    db.session.refresh(draft)
    assert draft.total_cents == 5278
    assert client.post(f"/invoices/{draft.id}/delete").status_code == 302
    assert count(Invoice, Invoice.id == draft.id) == 1  # issued invoices are voided, never deleted


def test_a_draft_can_be_deleted(client, login):
    customer = CustomerFactory()
    draft = invoice_service.create_draft(customer.id, [{"description": "Visit", "unit_price_cents": 1000}], today())
    db.session.commit()
    login("admin")
    response = client.post(f"/invoices/{draft.id}/delete")
    assert response.status_code == 302 and response.headers["Location"].endswith("/invoices/")
    assert count(Invoice) == 0 and count(InvoiceLine) == 0
    assert count(AuditEvent, AuditEvent.action == "invoice.delete_draft") == 1


@pytest.mark.parametrize("lines", [
    (),                                              # nothing described
    (("Router", "1", "", "16"),),                    # no price
    (("Router", "1", "abc", "16"),),                 # not money
    (("Router", "1", "-5", "16"),),                  # negative
    (("Router", "0", "5", "16"),),                   # zero quantity
    (("Router", "1", "5", "101"),),                  # tax above 100%
    (("x" * 256, "1", "5", "16"),),                  # too long
])
def test_a_bad_draft_is_a_form_error_that_keeps_what_was_typed(client, login, lines):
    customer = CustomerFactory()
    login("billing")
    response = client.post(f"/customers/{customer.id}/invoices/new",
                           data=draft_form(*lines, ("Second line kept", "1", "2.00", "0")) if lines else {})
    assert response.status_code == 422
    assert count(Invoice) == 0
    if lines:
        assert "Second line kept" in text_of(response)


def test_void_writes_a_credit_note_turns_payments_into_credit_and_is_audited(client, login):
    customer, invoice = billed_customer()
    payment_service.record_payment(customer.id, 1000, "cash", START, today())
    db.session.commit()
    user = login("billing")

    response = client.post(f"/invoices/{invoice.id}/void", data={"reason": "Billed the wrong plan"})

    assert response.status_code == 302
    db.session.refresh(invoice)
    assert invoice.status == "void" and invoice.void_reason == "Billed the wrong plan"
    [note] = db.session.scalars(select(CreditNote).where(CreditNote.invoice_id == invoice.id))
    assert note.kind == "void" and note.amount_cents == invoice.total_cents
    [event] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "invoice.void"))
    assert event.entity_id == invoice.id and event.actor_id == user.id
    page = text_of(client.get(f"/invoices/{invoice.id}"))
    assert note.number in page and "Void invoice" not in page and "Billed the wrong plan" in page
    customer_page = text_of(client.get(f"/customers/{customer.id}"))
    assert re.search(r'id="balance-credit">\$10\.00<', customer_page)  # the payment came back as credit


def test_void_needs_a_reason_and_asks_before_it_posts(client, login):
    _, invoice = billed_customer()
    login("billing")
    assert 'data-confirm="Void' in text_of(client.get(f"/invoices/{invoice.id}"))

    response = client.post(f"/invoices/{invoice.id}/void", data={"reason": "  "})

    assert response.status_code == 422 and "Say why the invoice is void." in text_of(response)
    db.session.refresh(invoice)
    assert invoice.status == "open" and count(CreditNote) == 0


def test_a_readonly_user_cannot_void(client, login):
    _, invoice = billed_customer()
    login("readonly")
    assert "Void invoice" not in text_of(client.get(f"/invoices/{invoice.id}"))
    assert client.post(f"/invoices/{invoice.id}/void", data={"reason": "x"}).status_code == 403
    db.session.refresh(invoice)
    assert invoice.status == "open" and count(CreditNote) == 0


def test_send_emails_the_invoice_now(client, login):
    _, invoice = billed_customer(email="payer@mail.example")
    login("billing")
    response = client.post(f"/invoices/{invoice.id}/send", follow_redirects=True)
    assert "Invoice sent to payer@mail.example." in text_of(response)
    [notification] = db.session.scalars(select(Notification).where(Notification.invoice_id == invoice.id))
    assert notification.status == "sent"
    db.session.refresh(invoice)
    assert invoice.sent_at is not None


# --- generate invoice now ------------------------------------------------------------------------------------------


def test_generate_invoice_now_bills_what_is_due_and_says_when_nothing_is(client, login):
    plan = PlanFactory(monthly_price_cents=4000, tax_rate_bp=0)
    sub = SubscriptionFactory(plan=plan, start_date=today(), billing_day=today().day, next_bill_date=today())
    customer_id = sub.customer_id
    login("billing")

    response = client.post(f"/customers/{customer_id}/generate-invoice")

    [invoice] = db.session.scalars(select(Invoice).where(Invoice.customer_id == customer_id))
    assert response.headers["Location"].endswith(f"/invoices/{invoice.id}")
    assert invoice.total_cents == 4000 and invoice.issue_date == today()
    again = client.post(f"/customers/{customer_id}/generate-invoice", follow_redirects=True)
    assert "Nothing is due for this customer today" in text_of(again)
    assert count(Invoice) == 1

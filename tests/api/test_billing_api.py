"""/api/billing/: invoices (draft, issue, void, send, pay), payments, stats and invoice generation over HTTP."""
from __future__ import annotations

import email
import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select, update

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CreditNote, Invoice, InvoiceLine, JobRun, Notification, Payment
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.platform.clock import today
from tests.api.helpers import assert_error, assert_ok, bearer
from tests.conftest import clean_context
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.jobs.conftest import BASE_ENV, start_flask
from tests.support.queues import BULK_REDIS_DB, drop_queue

ROUTER = {"description": "Router", "quantity": 2, "unit_price_cents": 1500, "tax_rate_bp": 1600}  # 3000 + 480 tax
INSTALL = {"description": "Installation", "unit_price_cents": 2000}


@pytest.fixture
def biller():
    """Headers of a billing user's token with every scope the role allows."""
    return bearer("billing", "read,write,billing")


def draft(client, headers, customer_id, lines=(ROUTER,), issue=False):
    response = client.post("/api/billing/invoices/", headers=headers,
                           json={"customer_id": customer_id, "lines": list(lines), "issue": issue})
    return assert_ok(response, 201)


def issued(client, headers, customer_id, lines=(ROUTER,)):
    return draft(client, headers, customer_id, lines, issue=True)


def pay(client, headers, invoice_id, **values):
    return client.post(f"/api/billing/invoices/{invoice_id}/pay/", json={"method": "cash", **values},
                       headers=headers)


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


# --- invoices ---------------------------------------------------------------------------------------------------

def test_a_draft_is_created_with_its_lines_totals_and_location(client, biller):
    customer = CustomerFactory()
    response = client.post("/api/billing/invoices/", headers=biller,
                           json={"customer_id": customer.id, "lines": [ROUTER, INSTALL]})
    data = assert_ok(response, 201)
    assert response.headers["Location"] == f"/api/billing/invoices/{data['id']}/"
    assert (data["status"], data["number"], data["customer_id"]) == ("draft", None, customer.id)
    assert (data["subtotal_cents"], data["tax_cents"], data["total_cents"]) == (5000, 480, 5480)
    assert data["balance_cents"] == 5480 and data["payments"] == [] and data["credits"] == []
    assert [(line["description"], line["amount_cents"], line["tax_cents"]) for line in data["lines"]] == [
        ("Router", 3000, 480), ("Installation", 2000, 0)]
    assert db.session.get(Invoice, data["id"]).status == "draft" and count(InvoiceLine) == 2
    assert count(Notification) == 0  # a draft is not mailed
    assert client.get(response.headers["Location"], headers=biller).get_json()["data"] == data


def test_issue_true_numbers_and_issues_at_once(client, biller):
    data = issued(client, biller, CustomerFactory().id)
    assert data["status"] == "open" and data["number"] == f"INV-{today().year}-000001"
    assert data["issue_date"] == today().isoformat() and data["due_date"] > data["issue_date"]
    (note,) = db.session.scalars(select(Notification)).all()
    assert (note.kind, note.status, note.invoice_id) == ("invoice", "queued", data["id"])


def test_invoice_input_errors_name_their_fields(client, biller):
    customer = CustomerFactory()
    body = assert_error(client.post("/api/billing/invoices/", headers=biller, json={
        "customer_id": customer.id, "lines": [{"description": "", "unit_price_cents": -1, "quantity": 0}]}),
        422, "VALIDATION_ERROR")
    assert body["error"]["details"]
    body = assert_error(client.post("/api/billing/invoices/", headers=biller,
                                    json={"customer_id": customer.id, "lines": []}), 422, "VALIDATION_ERROR")
    assert "lines" in body["error"]["details"]
    body = assert_error(client.post("/api/billing/invoices/", headers=biller,
                                    json={"customer_id": customer.id, "lines": [ROUTER], "status": "paid"}),
                        422, "VALIDATION_ERROR")
    assert "status" in body["error"]["details"]
    assert_error(client.post("/api/billing/invoices/", headers=biller, json={"customer_id": 999_999,
                                                                             "lines": [ROUTER]}), 404, "NOT_FOUND")
    assert count(Invoice) == 0


def test_put_replaces_a_drafts_lines(client, biller):
    invoice = draft(client, biller, CustomerFactory().id, [ROUTER, INSTALL])
    data = assert_ok(client.put(f"/api/billing/invoices/{invoice['id']}/", json={"lines": [INSTALL]},
                                headers=biller))
    assert [line["description"] for line in data["lines"]] == ["Installation"]
    assert (data["total_cents"], data["status"]) == (2000, "draft")
    assert count(InvoiceLine) == 1 and db.session.get(Invoice, invoice["id"]).total_cents == 2000


def test_an_issued_invoice_is_never_edited_nor_deleted(client, biller):
    invoice = issued(client, biller, CustomerFactory().id)
    body = assert_error(client.put(f"/api/billing/invoices/{invoice['id']}/", json={"lines": [INSTALL]},
                                   headers=biller), 422, "BUSINESS_RULE_VIOLATION")
    assert "void" in body["message"]
    body = assert_error(client.delete(f"/api/billing/invoices/{invoice['id']}/", headers=biller), 422,
                        "BUSINESS_RULE_VIOLATION")
    assert "void it instead" in body["message"]
    stored = db.session.get(Invoice, invoice["id"])
    assert (stored.status, stored.total_cents, count(InvoiceLine)) == ("open", 3480, 1)


def test_delete_removes_a_draft(client, biller):
    invoice = draft(client, biller, CustomerFactory().id)
    data = assert_ok(client.delete(f"/api/billing/invoices/{invoice['id']}/", headers=biller))
    assert data["id"] == invoice["id"] and data["status"] == "draft"
    assert db.session.get(Invoice, invoice["id"]) is None and count(InvoiceLine) == 0
    assert_error(client.get(f"/api/billing/invoices/{invoice['id']}/", headers=biller), 404, "NOT_FOUND")


def test_issue_a_draft_then_not_again(client, biller):
    invoice = draft(client, biller, CustomerFactory().id)
    data = assert_ok(client.post(f"/api/billing/invoices/{invoice['id']}/issue/", headers=biller))
    assert data["status"] == "open" and data["number"].startswith(f"INV-{today().year}-")
    assert db.session.scalar(select(AuditEvent.action).where(AuditEvent.action == "invoice.issue"))
    body = assert_error(client.post(f"/api/billing/invoices/{invoice['id']}/issue/", headers=biller), 422,
                        "BUSINESS_RULE_VIOLATION")
    assert "already issued" in body["message"]


def test_issuing_applies_the_customers_credit(client, biller):
    customer = CustomerFactory()
    assert_ok(client.post("/api/billing/payments/", headers=biller,
                          json={"customer_id": customer.id, "amount_cents": 1000, "method": "cash"}), 201)
    data = issued(client, biller, customer.id)
    assert (data["amount_paid_cents"], data["balance_cents"]) == (1000, 2480)


def test_void_cancels_an_issued_invoice_with_a_credit_note(client, biller):
    invoice = issued(client, biller, CustomerFactory().id)
    assert_ok(pay(client, biller, invoice["id"], amount_cents=480), 201)
    response = client.post(f"/api/billing/invoices/{invoice['id']}/void/", json={"reason": "Wrong customer"},
                           headers=biller)
    data = assert_ok(response)
    assert (data["status"], data["void_reason"], data["balance_cents"]) == ("void", "Wrong customer", 0)
    (note,) = db.session.scalars(select(CreditNote).where(CreditNote.kind == "void")).all()
    assert note.invoice_id == invoice["id"] and note.amount_cents == 3480 and note.number in response.json["message"]
    assert data["payments"][0]["reversed"] is True  # the money paid is the customer's credit now
    body = assert_error(client.post(f"/api/billing/invoices/{invoice['id']}/void/", json={"reason": "again"},
                                    headers=biller), 422, "BUSINESS_RULE_VIOLATION")
    assert "already void" in body["message"]


def test_void_needs_a_reason_and_an_issued_invoice(client, biller):
    invoice = issued(client, biller, CustomerFactory().id)
    for payload in ({}, {"reason": ""}):
        body = assert_error(client.post(f"/api/billing/invoices/{invoice['id']}/void/", json=payload,
                                        headers=biller), 422, "VALIDATION_ERROR")
        assert "reason" in body["error"]["details"]
    a_draft = draft(client, biller, invoice["customer_id"])
    body = assert_error(client.post(f"/api/billing/invoices/{a_draft['id']}/void/", json={"reason": "x"},
                                    headers=biller), 422, "BUSINESS_RULE_VIOLATION")
    assert "delete it instead" in body["message"]
    assert count(CreditNote) == 0


def test_send_mails_the_invoice_with_its_pdf_to_the_outbox(app, client, biller):
    customer = CustomerFactory(email="payer@mail.example")
    invoice = issued(client, biller, customer.id)
    data = assert_ok(client.post(f"/api/billing/invoices/{invoice['id']}/send/", headers=biller))
    assert (data["status"], data["recipient"], data["attempts"], data["last_error"]) == (
        "sent", "payer@mail.example", 1, None)
    assert data["sent_at"]
    assert db.session.get(Invoice, invoice["id"]).sent_at is not None
    (sent,) = Path(app.config["MAIL_OUTBOX_DIR"]).glob("*.eml")
    message = email.message_from_bytes(sent.read_bytes())
    assert message["To"] == "payer@mail.example" and message["Subject"] == f"Invoice {invoice['number']}"
    assert [part.get_content_type() for part in message.walk() if part.get_filename()] == ["application/pdf"]
    # Sending again re-sends the same outbox row.
    again = assert_ok(client.post(f"/api/billing/invoices/{invoice['id']}/send/", headers=biller))
    assert again["id"] == data["id"] and again["status"] == "sent" and count(Notification) == 1
    assert len(list(Path(app.config["MAIL_OUTBOX_DIR"]).glob("*.eml"))) == 2


def test_send_without_an_address_answers_failed_in_the_outbox(client, biller):
    invoice = issued(client, biller, CustomerFactory(email=None).id)
    response = client.post(f"/api/billing/invoices/{invoice['id']}/send/", headers=biller)
    data = assert_ok(response)
    assert data["status"] == "failed" and "no email address" in data["last_error"]
    assert "failed" in response.get_json()["message"]
    assert db.session.get(Invoice, invoice["id"]).sent_at is None


def test_drafts_and_void_invoices_are_not_sent(client, biller):
    customer = CustomerFactory()
    a_draft = draft(client, biller, customer.id)
    body = assert_error(client.post(f"/api/billing/invoices/{a_draft['id']}/send/", headers=biller), 422,
                        "BUSINESS_RULE_VIOLATION")
    assert "draft" in body["message"]
    void = issued(client, biller, customer.id)
    client.post(f"/api/billing/invoices/{void['id']}/void/", json={"reason": "x"}, headers=biller)
    assert_error(client.post(f"/api/billing/invoices/{void['id']}/send/", headers=biller), 422,
                 "BUSINESS_RULE_VIOLATION")


# --- paying -----------------------------------------------------------------------------------------------------

def test_pay_defaults_to_the_balance_and_a_partial_payment_leaves_the_rest(client, biller):
    invoice = issued(client, biller, CustomerFactory().id)
    response = pay(client, biller, invoice["id"], amount_cents=1000, reference="R-1")
    partial = assert_ok(response, 201)
    assert response.headers["Location"] == f"/api/billing/payments/{partial['id']}/"
    assert (partial["amount_cents"], partial["allocated_cents"], partial["credit_cents"]) == (1000, 1000, 0)
    assert partial["allocations"] == [{"invoice_id": invoice["id"], "invoice_number": invoice["number"],
                                       "amount_cents": 1000, "reversed": False}]
    stored = db.session.get(Invoice, invoice["id"])
    assert (stored.status, stored.balance_cents) == ("open", 2480)

    rest = assert_ok(pay(client, biller, invoice["id"]), 201)
    assert rest["amount_cents"] == 2480 and rest["recorded_by"].endswith(")")
    db.session.expire_all()
    stored = db.session.get(Invoice, invoice["id"])
    assert (stored.status, stored.balance_cents, stored.paid_at is not None) == ("paid", 0, True)

    body = assert_error(pay(client, biller, invoice["id"]), 422, "BUSINESS_RULE_VIOLATION")
    assert "nothing to pay" in body["message"]
    body = assert_error(pay(client, biller, invoice["id"], amount_cents=100), 422, "BUSINESS_RULE_VIOLATION")
    assert "paid" in body["message"]
    assert count(Payment) == 2


def test_paying_more_than_the_balance_leaves_credit(client, biller):
    invoice = issued(client, biller, CustomerFactory().id)
    data = assert_ok(pay(client, biller, invoice["id"], amount_cents=5000, method="mobile_money"), 201)
    assert (data["allocated_cents"], data["credit_cents"], data["method"]) == (3480, 1520, "mobile_money")


@pytest.mark.parametrize("payload, field", [({"method": "barter"}, "method"), ({"amount_cents": 0}, "amount_cents"),
                                            ({"amount_cents": -5}, "amount_cents"),
                                            ({"received_on": "2999-01-01"}, "received_on"),
                                            ({"received_on": "not a date"}, "received_on")])
def test_pay_input_errors_name_their_field(client, biller, payload, field):
    invoice = issued(client, biller, CustomerFactory().id)
    body = assert_error(pay(client, biller, invoice["id"], **payload), 422, "VALIDATION_ERROR")
    assert field in body["error"]["details"]
    assert count(Payment) == 0


def test_a_draft_or_void_invoice_cannot_be_paid(client, biller):
    customer = CustomerFactory()
    a_draft = draft(client, biller, customer.id)
    for payload in ({}, {"amount_cents": 500}):
        assert_error(pay(client, biller, a_draft["id"], **payload), 422, "BUSINESS_RULE_VIOLATION")
    void = issued(client, biller, customer.id)
    client.post(f"/api/billing/invoices/{void['id']}/void/", json={"reason": "x"}, headers=biller)
    for payload in ({}, {"amount_cents": 500}):
        assert_error(pay(client, biller, void["id"], **payload), 422, "BUSINESS_RULE_VIOLATION")
    assert count(Payment) == 0


# --- payments ---------------------------------------------------------------------------------------------------

def test_a_payment_goes_to_the_oldest_due_first_and_the_rest_is_credit(client, biller):
    customer = CustomerFactory()
    first, second = issued(client, biller, customer.id), issued(client, biller, customer.id, [INSTALL])
    response = client.post("/api/billing/payments/", headers=biller, json={
        "customer_id": customer.id, "amount_cents": 6000, "method": "bank_transfer", "reference": "TX-9"})
    data = assert_ok(response, 201)
    assert response.headers["Location"] == f"/api/billing/payments/{data['id']}/"
    assert [(a["invoice_id"], a["amount_cents"]) for a in data["allocations"]] == [(first["id"], 3480),
                                                                                   (second["id"], 2000)]
    assert (data["allocated_cents"], data["credit_cents"], data["reference"]) == (5480, 520, "TX-9")
    detail = assert_ok(client.get(f"/api/billing/payments/{data['id']}/", headers=biller))
    assert detail == data


def test_a_named_invoice_is_paid_first(client, biller):
    customer = CustomerFactory()
    first, second = issued(client, biller, customer.id), issued(client, biller, customer.id, [INSTALL])
    data = assert_ok(client.post("/api/billing/payments/", headers=biller, json={
        "customer_id": customer.id, "amount_cents": 2000, "method": "card", "invoice_id": second["id"]}), 201)
    assert [(a["invoice_id"], a["amount_cents"]) for a in data["allocations"]] == [(second["id"], 2000)]
    assert db.session.get(Invoice, first["id"]).balance_cents == 3480


def test_another_customers_invoice_is_a_field_error(client, biller):
    mine, theirs = CustomerFactory(), CustomerFactory()
    invoice = issued(client, biller, theirs.id)
    body = assert_error(client.post("/api/billing/payments/", headers=biller, json={
        "customer_id": mine.id, "amount_cents": 100, "method": "cash", "invoice_id": invoice["id"]}),
        422, "VALIDATION_ERROR")
    assert "invoice_id" in body["error"]["details"]
    assert count(Payment) == 0 and db.session.get(Invoice, invoice["id"]).balance_cents == 3480


def test_reverse_undoes_the_allocations_and_reopens_the_invoice(client, biller):
    invoice = issued(client, biller, CustomerFactory().id)
    payment = assert_ok(pay(client, biller, invoice["id"]), 201)
    assert db.session.get(Invoice, invoice["id"]).status == "paid"
    data = assert_ok(client.post(f"/api/billing/payments/{payment['id']}/reverse/", json={"reason": "Bounced"},
                                 headers=biller))
    assert (data["status"], data["reversal_reason"], data["allocated_cents"], data["credit_cents"]) == (
        "reversed", "Bounced", 0, 0)
    assert data["reversed_at"] and data["allocations"][0]["reversed"] is True
    stored = db.session.get(Invoice, invoice["id"])
    assert (stored.status, stored.balance_cents, stored.paid_at) == ("open", 3480, None)
    body = assert_error(client.post(f"/api/billing/payments/{payment['id']}/reverse/", json={"reason": "again"},
                                    headers=biller), 422, "BUSINESS_RULE_VIOLATION")
    assert "already reversed" in body["message"]
    body = assert_error(client.post(f"/api/billing/payments/{payment['id']}/reverse/", json={}, headers=biller),
                        422, "VALIDATION_ERROR")
    assert "reason" in body["error"]["details"]


def test_payment_list_and_detail(client, biller):
    customer = CustomerFactory()
    ids = [assert_ok(client.post("/api/billing/payments/", headers=biller, json={
        "customer_id": customer.id, "amount_cents": amount, "method": "cash"}), 201)["id"] for amount in (100, 200)]
    body = client.get("/api/billing/payments/", headers=biller).get_json()
    assert [row["id"] for row in body["data"]] == ids[::-1]  # newest first
    assert body["data"][0]["account_number"] == customer.account_number and body["pagination"]["total"] == 2
    assert_error(client.get("/api/billing/payments/999999/", headers=biller), 404, "NOT_FOUND")


# --- stats ------------------------------------------------------------------------------------------------------

def test_invoice_stats_equal_the_sums_of_the_invoices_made(client, biller):
    a, b = CustomerFactory(), CustomerFactory()
    drafts = [draft(client, biller, a.id, [INSTALL])]
    opened = [issued(client, biller, a.id), issued(client, biller, b.id, [ROUTER, INSTALL])]
    paid = issued(client, biller, b.id, [INSTALL])
    assert_ok(pay(client, biller, paid["id"]), 201)
    partly = issued(client, biller, a.id, [INSTALL])
    assert_ok(pay(client, biller, partly["id"], amount_cents=500), 201)
    void = issued(client, biller, b.id)
    client.post(f"/api/billing/invoices/{void['id']}/void/", json={"reason": "x"}, headers=biller)
    # One invoice was issued 40 days ago and is overdue now.
    long_ago = today() - timedelta(days=40)
    late = draft(client, biller, a.id, [ROUTER])
    # Issued then, through the service (an issued invoice's dates never change afterwards).
    late = {"id": late["id"], "total_cents": invoice_service.issue(late["id"], long_ago).total_cents}
    db.session.execute(update(Invoice).where(Invoice.id == late["id"]).values(status="overdue"))
    db.session.commit()

    data = assert_ok(client.get("/api/billing/stats/invoices/", headers=biller))
    open_totals = [i["total_cents"] for i in opened] + [partly["total_cents"]]
    assert data["by_status"] == {
        "draft": {"count": 1, "total_cents": drafts[0]["total_cents"], "balance_cents": drafts[0]["total_cents"]},
        "open": {"count": 3, "total_cents": sum(open_totals), "balance_cents": sum(open_totals) - 500},
        "overdue": {"count": 1, "total_cents": 3480, "balance_cents": 3480},
        "paid": {"count": 1, "total_cents": paid["total_cents"], "balance_cents": 0},
        "void": {"count": 1, "total_cents": void["total_cents"], "balance_cents": 0},
    }
    assert data["invoiced_cents"] == sum(open_totals) + 3480 + paid["total_cents"]
    assert data["outstanding_cents"] == sum(open_totals) - 500 + 3480
    assert (data["overdue_cents"], data["overdue_count"], data["currency"]) == (3480, 1, "USD")

    recent = assert_ok(client.get(f"/api/billing/stats/invoices/?issued_from={today().isoformat()}",
                                  headers=biller))
    assert recent["by_status"]["overdue"]["count"] == 0 and recent["issued_from"] == today().isoformat()
    assert recent["invoiced_cents"] == data["invoiced_cents"] - 3480
    old = assert_ok(client.get(f"/api/billing/stats/invoices/?issued_to={long_ago.isoformat()}", headers=biller))
    assert old["invoiced_cents"] == 3480 and old["by_status"]["open"]["count"] == 0


def test_payment_stats_equal_the_sums_of_the_payments_made(client, biller):
    customer = CustomerFactory()
    made = [("cash", 1000), ("cash", 250), ("card", 700), ("mobile_money", 3000), ("bank_transfer", 90)]
    ids = [assert_ok(client.post("/api/billing/payments/", headers=biller, json={
        "customer_id": customer.id, "amount_cents": amount, "method": method}), 201)["id"] for method, amount in made]
    client.post(f"/api/billing/payments/{ids[3]}/reverse/", json={"reason": "Chargeback"}, headers=biller)
    week_ago = today() - timedelta(days=7)
    db.session.execute(update(Payment).where(Payment.id == ids[4]).values(received_on=week_ago))
    db.session.commit()

    data = assert_ok(client.get("/api/billing/stats/payments/", headers=biller))
    completed = [m for i, m in enumerate(made) if i != 3]
    assert (data["count"], data["received_cents"]) == (len(completed), sum(a for _, a in completed))
    assert (data["reversed_count"], data["reversed_cents"]) == (1, 3000)
    for method in ("cash", "card", "mobile_money", "bank_transfer", "provider"):
        amounts = [a for m, a in completed if m == method]
        assert data["by_method"][method] == {"count": len(amounts), "amount_cents": sum(amounts)}, method
    ranged = assert_ok(client.get(f"/api/billing/stats/payments/?received_to={week_ago.isoformat()}",
                                  headers=biller))
    assert (ranged["count"], ranged["received_cents"], ranged["reversed_count"]) == (1, 90, 0)
    body = assert_error(client.get("/api/billing/stats/payments/?received_from=yesterday", headers=biller), 422,
                        "VALIDATION_ERROR")
    assert "received_from" in body["error"]["details"]


# --- generation -------------------------------------------------------------------------------------------------

def test_generate_invoice_bills_what_is_due_once(client, biller):
    plan = PlanFactory(monthly_price_cents=3000, tax_rate_bp=1600)
    sub = SubscriptionFactory(plan=plan, start_date=today() - timedelta(days=5), billing_day=today().day,
                              next_bill_date=today())
    response = client.post("/api/billing/generate-invoice/", json={"customer_id": sub.customer_id}, headers=biller)
    data = assert_ok(response, 201)
    assert response.headers["Location"] == f"/api/billing/invoices/{data['id']}/"
    assert data["status"] == "open" and data["number"] and data["customer_id"] == sub.customer_id
    (line,) = data["lines"]
    assert (line["kind"], line["subscription_id"], line["period_start"]) == ("subscription", sub.id,
                                                                            today().isoformat())
    assert data["total_cents"] == line["amount_cents"] + line["tax_cents"] > 0

    again = client.post("/api/billing/generate-invoice/", json={"customer_id": sub.customer_id}, headers=biller)
    assert again.status_code == 200 and again.get_json()["data"] is None and "Location" not in again.headers
    assert "Nothing is due" in again.get_json()["message"]
    assert count(Invoice) == 1
    assert_error(client.post("/api/billing/generate-invoice/", json={"customer_id": 999_999}, headers=biller),
                 404, "NOT_FOUND")


def test_generate_invoice_for_a_customer_with_nothing_due_is_200_with_null(client, biller):
    customer = CustomerFactory()
    response = client.post("/api/billing/generate-invoice/", json={"customer_id": customer.id}, headers=biller)
    assert response.status_code == 200 and response.get_json()["data"] is None and count(Invoice) == 0


@pytest.fixture
def bulk_app(make_app, backends, tmp_path):
    """An app whose jobs go to a queue of its own in a Redis database no other test uses."""
    if not backends["redis_url"]:
        pytest.skip("needs Redis")
    url = f"redis://127.0.0.1:6379/{BULK_REDIS_DB}"
    queue = f"test-api-bulk-{uuid.uuid4().hex[:8]}"
    app = make_app(REDIS_URL=url, RQ_QUEUE=queue, BILLING_CHUNK_SIZE=2, MAIL_OUTBOX_DIR=str(tmp_path / "outbox"))
    with clean_context(app):
        yield app
    drop_queue(redis.Redis.from_url(url), queue)


def test_bulk_generate_runs_on_a_real_worker_and_reports_progress(bulk_app, backends):
    client = bulk_app.test_client()
    headers = bearer("admin", "read,write,billing")
    subs = [SubscriptionFactory(start_date=today() - timedelta(days=3), billing_day=today().day,
                                next_bill_date=today()) for _ in range(5)]
    response = client.post("/api/billing/bulk-generate/", json={}, headers=headers)
    started = assert_ok(response, 202)
    assert response.headers["Location"] == started["progress_url"] == f"/api/billing/bulk-generate/{started['id']}/"
    assert (started["kind"], started["as_of"], started["status"], started["finished"]) == (
        "generate_monthly_invoices", today().isoformat(), "running", False)
    assert "(API)" in started["triggered_by"]

    env = {**os.environ, **BASE_ENV, "DATABASE_URL": backends["database_url"],
           "REDIS_URL": bulk_app.config["REDIS_URL"], "RQ_QUEUE": bulk_app.config["RQ_QUEUE"],
           "BILLING_CHUNK_SIZE": "2"}
    worker = start_flask(env, "rq", "worker", "--burst")
    try:
        # Poll as a client would; the worker's own end bounds the wait.
        deadline, seen = time.monotonic() + 60, []
        while True:
            progress = assert_ok(client.get(started["progress_url"], headers=headers))
            seen.append(progress["percent"])
            if progress["finished"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, output
    assert (progress["status"], progress["percent"], progress["done"], progress["total"]) == (
        "succeeded", 100, 3, 3), output
    assert progress["counts"]["invoices"] == 5 and progress["counts"]["lines"] == 5
    assert progress["finished_at"] and progress["error"] is None and seen == sorted(seen)
    db.session.rollback()
    billed = set(db.session.scalars(select(InvoiceLine.subscription_id).where(InvoiceLine.kind == "subscription")))
    assert billed == {s.id for s in subs}


def test_bulk_generate_input_errors(bulk_app):
    client = bulk_app.test_client()
    headers = bearer("billing", "read,write,billing")
    tomorrow = (today() + timedelta(days=1)).isoformat()
    body = assert_error(client.post("/api/billing/bulk-generate/", json={"as_of": tomorrow}, headers=headers), 422,
                        "VALIDATION_ERROR")
    assert "as_of" in body["error"]["details"]
    body = assert_error(client.post("/api/billing/bulk-generate/", json={"kind": "drop_tables"}, headers=headers),
                        422, "VALIDATION_ERROR")
    assert "kind" in body["error"]["details"]
    assert count(JobRun) == 0


@pytest.mark.parametrize("redis_url", [None, "redis://127.0.0.1:1/0"])
def test_bulk_generate_without_redis_is_503_and_records_nothing(make_app, redis_url):
    with clean_context(make_app(REDIS_URL=redis_url)) as app:
        response = app.test_client().post("/api/billing/bulk-generate/", json={},
                                          headers=bearer("billing", "read,write,billing"))
        body = assert_error(response, 503, "EXTERNAL_SERVICE_ERROR")
        assert "Redis" in body["message"]
        assert count(JobRun) == 0


def test_the_progress_of_an_unknown_run_is_404(client, biller):
    for job_id in (0, 999_999, 2**31 - 1):
        assert_error(client.get(f"/api/billing/bulk-generate/{job_id}/", headers=biller), 404, "NOT_FOUND")

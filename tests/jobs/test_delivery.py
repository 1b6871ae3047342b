"""Delivering the outbox through a real SMTP server (aiosmtpd): invoice emails with their PDF, reminder and
suspension texts with amounts and dates, retries with a limit, and the staff's Send and Retry buttons."""
from __future__ import annotations

import re
import zlib
from datetime import date

import pytest
from sqlalchemy import select

from isp_admin.errors import BusinessRuleViolation
from isp_admin.extensions import db
from isp_admin.models import Invoice, JobRun, Notification
from isp_admin.services.billing import collections, invoices, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.pdf import render_invoice_pdf
from isp_admin.services.messaging import delivery
from tests.conftest import clean_context
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.support.network import free_port
from tests.support.smtp import running_smtp_server

BILL_DAY = date(2026, 3, 1)
COMPANY = {"COMPANY_NAME": "Acme Fibre Ltd", "COMPANY_ADDRESS": "12 Harbour Road\nMombasa"}


@pytest.fixture
def inbox():
    with running_smtp_server() as inbox:
        yield inbox


@pytest.fixture
def mail_app(make_app, inbox):
    """An app that sends through the test SMTP server, on an empty database."""
    with clean_context(make_app(MAIL_URL=inbox.url, **COMPANY)) as app:
        yield app


def billed_customer(email: str | None = "ann@customer.example") -> tuple:
    """A customer billed on 1 March for March (31 days at 31.00 + 16% tax = 35.96)."""
    customer = CustomerFactory(name="Ann Wanjiru", email=email)
    plan = PlanFactory(name="Fiber 100", monthly_price_cents=3100, tax_rate_bp=1600)
    SubscriptionFactory(customer=customer, plan=plan, start_date=date(2026, 1, 1), billing_day=1,
                        next_bill_date=BILL_DAY)
    invoice = billing.generate_invoice_for_customer(customer.id, BILL_DAY)
    db.session.commit()
    return customer, invoice


def text_of(message) -> str:
    return message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


def pdf_strings(pdf: bytes) -> bytes:
    """The PDF's bytes with every Flate stream inflated (metadata lives in a compressed object stream)."""
    out = [pdf]
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            out.append(zlib.decompress(match.group(1)))
        except zlib.error:
            continue
    return b"\n".join(out)


def outbox(invoice_id: int, kind: str = "invoice") -> Notification:
    db.session.expire_all()
    return db.session.scalar(select(Notification).where(Notification.invoice_id == invoice_id,
                                                        Notification.kind == kind))


def test_the_invoice_email_carries_its_pdf_through_smtp(mail_app, inbox):
    customer, invoice = billed_customer()
    assert outbox(invoice.id).status == "queued"

    result = mail_app.test_cli_runner().invoke(args=["billing", "deliver-notifications", "--date", "2026-03-01"])
    assert result.exit_code == 0, result.output

    [envelope] = inbox.envelopes
    assert envelope.rcpt_tos == ["ann@customer.example"]
    [message] = inbox.messages
    assert message["Subject"] == "Invoice INV-2026-000001"
    body = text_of(message)
    assert "Dear Ann Wanjiru," in body
    assert "Total:          $35.96" in body and "Amount due:     $35.96" in body
    assert "Due date:       15 Mar 2026" in body
    assert "Acme Fibre Ltd" in body
    [attachment] = message.iter_attachments()
    assert (attachment.get_content_type(), attachment.get_filename()) == ("application/pdf", "INV-2026-000001.pdf")
    pdf = attachment.get_content()
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1024 and pdf.rstrip().endswith(b"%%EOF")
    assert b"Invoice INV-2026-000001" in pdf_strings(pdf)  # the document's title

    sent = outbox(invoice.id)
    assert (sent.status, sent.attempts, sent.last_error, sent.recipient) == ("sent", 1, None, customer.email)
    assert sent.sent_at is not None
    assert db.session.get(Invoice, invoice.id).sent_at is not None
    run = db.session.scalar(select(JobRun).where(JobRun.kind == "deliver_notifications"))
    assert (run.status, run.counts["sent"], run.triggered_by) == ("succeeded", 1, "cli")


def test_the_pdf_shows_the_lines_with_their_proration(mail_app):
    customer = CustomerFactory(name="Ben Otieno")
    plan = PlanFactory(name="Home 25", monthly_price_cents=3100, tax_rate_bp=1600)
    # Starts 22 March: 10 of March's 31 days, 31.00 × 10/31 = 10.00, tax 1.60.
    SubscriptionFactory(customer=customer, plan=plan, start_date=date(2026, 3, 22), billing_day=1,
                        next_bill_date=date(2026, 3, 22))
    invoice = billing.generate_invoice_for_customer(customer.id, date(2026, 3, 22))
    db.session.commit()

    from isp_admin.services.billing.pdf import render_invoice_html

    html = render_invoice_html(invoice.id)
    assert "Ben Otieno" in html and "INV-2026-000001" in html and "Acme Fibre Ltd" in html
    assert "$31.00 × 10/31 days" in html and "10 of 31 days" in html
    assert "$10.00" in html and "$1.60" in html and "$11.60" in html and "16.00%" in html
    assert "<script" not in html and "<form" not in html and "href=" not in html
    assert render_invoice_pdf(invoice.id).startswith(b"%PDF-")


def test_reminder_and_suspension_texts_give_amounts_and_dates(mail_app, inbox):
    customer, invoice = billed_customer()
    delivery.deliver_many(delivery.queued_ids(), db.session.commit)
    assert collections.run_send_reminders(date(2026, 3, 12)) == 1  # three days before the due date
    collections.run_mark_overdue(date(2026, 3, 23))
    assert collections.run_enforce_overdue(date(2026, 3, 23)) == 1
    db.session.commit()

    counts = delivery.deliver_many(delivery.queued_ids(), db.session.commit)

    assert counts == {"sent": 2, "retry": 0, "failed": 0, "skipped": 0}
    by_subject = {m["Subject"]: text_of(m) for m in inbox.messages}
    reminder = by_subject["Your invoice INV-2026-000001 is due soon"]
    assert "Amount due: $35.96" in reminder and "Due date:   15 Mar 2026" in reminder
    suspension = by_subject["Your service is suspended for non-payment"]
    assert "Overdue balance: $35.96" in suspension
    assert "Oldest unpaid:   INV-2026-000001, due 15 Mar 2026" in suspension


def test_an_unreachable_smtp_server_is_retried_then_marked_failed(make_app):
    with clean_context(make_app(MAIL_URL=f"smtp://127.0.0.1:{free_port()}")):
        _, invoice = billed_customer()
        notification_id = outbox(invoice.id).id

        assert delivery.deliver(notification_id) == "retry"
        db.session.commit()
        first = outbox(invoice.id)
        assert (first.status, first.attempts) == ("queued", 1)
        assert "ConnectionRefusedError" in first.last_error

        assert [delivery.deliver(notification_id) for _ in range(2)] == ["retry", "failed"]
        db.session.commit()
        failed = outbox(invoice.id)
        assert (failed.status, failed.attempts, failed.sent_at) == ("failed", 3, None)
        assert delivery.deliver(notification_id) == "skipped"  # failed rows wait for a person
        assert db.session.get(Invoice, invoice.id).sent_at is None

        again = delivery.retry_notification(notification_id)
        assert (again.status, again.attempts, again.last_error) == ("queued", 0, None)
        with pytest.raises(BusinessRuleViolation):
            delivery.retry_notification(notification_id)


def test_a_customer_without_email_fails_at_once_with_a_clear_reason(mail_app, inbox):
    customer, invoice = billed_customer(email=None)

    assert delivery.deliver_many(delivery.queued_ids(), db.session.commit)["failed"] == 1

    failed = outbox(invoice.id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.last_error == f"Customer {customer.account_number} has no email address; add one, then retry."
    assert inbox.envelopes == []


def test_send_invoice_delivers_now_and_sends_again_on_request(mail_app, inbox):
    _, invoice = billed_customer()

    first = delivery.send_invoice(invoice.id)
    db.session.commit()
    assert first.status == "sent" and len(inbox.messages) == 1
    sent_at = db.session.get(Invoice, invoice.id).sent_at

    again = delivery.send_invoice(invoice.id)
    db.session.commit()
    assert again.id == first.id and again.status == "sent" and again.attempts == 1
    assert len(inbox.messages) == 2
    assert db.session.get(Invoice, invoice.id).sent_at >= sent_at

    draft = invoices.create_draft(invoice.customer_id, [{"description": "Router", "quantity": 1,
                                                         "unit_price_cents": 5000, "tax_rate_bp": 0}], BILL_DAY)
    with pytest.raises(BusinessRuleViolation):
        delivery.send_invoice(draft.id)


def test_a_reminder_for_an_invoice_paid_since_it_was_queued_is_not_sent(mail_app, inbox):
    customer, invoice = billed_customer()
    delivery.deliver_many(delivery.queued_ids(), db.session.commit)
    collections.run_send_reminders(date(2026, 3, 15))
    payments.record_payment(customer.id, 3596, "cash", date(2026, 3, 15), date(2026, 3, 15))
    db.session.commit()

    assert delivery.deliver_many(delivery.queued_ids(), db.session.commit)["failed"] == 1

    reminder = outbox(invoice.id, "reminder_due")
    assert reminder.status == "failed"
    assert reminder.last_error == "Not sent: invoice INV-2026-000001 is paid; no reminder is due."
    assert [m["Subject"] for m in inbox.messages] == ["Invoice INV-2026-000001"]

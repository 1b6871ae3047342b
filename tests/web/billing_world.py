"""Billing records for web tests: customers billed through the real services, and cheap fixed rows for the
role matrix (one insert each, so its hundreds of cells stay fast)."""
from __future__ import annotations

from datetime import date

from isp_admin.extensions import db
from isp_admin.models import Invoice, InvoiceLine, JobRun, Notification, Payment, PaymentAllocation
from isp_admin.services.billing import run as billing
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

# A subscription starting on 10 January with billing day 1 is first billed for 22 of January's 31 days.
START = date(2026, 1, 10)


def billed_customer(*, price: int = 3000, tax_bp: int = 1600, start: date = START, billing_day: int = 1,
                    **customer_fields):
    """Create a customer with one subscription and bill it (through the real run) as of its start date."""
    plan = PlanFactory(monthly_price_cents=price, tax_rate_bp=tax_bp, setup_fee_cents=0)
    customer = CustomerFactory(**customer_fields)
    SubscriptionFactory(customer=customer, plan=plan, start_date=start, billing_day=billing_day,
                        next_bill_date=start)
    invoice = billing.generate_invoice_for_customer(customer.id, start)
    db.session.commit()
    return customer, invoice


def billing_records(customer_id: int) -> dict:
    """Commit an open invoice part-paid by a payment, a draft, a finished run and a failed email; return ids."""
    invoice = Invoice(number="INV-2025-000007", customer_id=customer_id, status="open", issue_date=START,
                      due_date=date(2026, 1, 24), currency="USD", subtotal_cents=4900, tax_cents=784,
                      total_cents=5684, amount_paid_cents=1000)
    draft = Invoice(customer_id=customer_id, status="draft", issue_date=START, due_date=date(2026, 1, 24),
                    currency="USD", subtotal_cents=2500, tax_cents=400, total_cents=2900)
    payment = Payment(customer_id=customer_id, amount_cents=1000, currency="USD", method="cash",
                      received_on=date(2026, 1, 12), status="completed", recorded_by="matrix@isp.example")
    job_run = JobRun(kind="nightly", as_of=START, status="succeeded", triggered_by="system", total_chunks=6,
                     done_chunks=6, counts={"invoices": 1})
    db.session.add_all([invoice, draft, payment, job_run])
    db.session.flush()
    db.session.add_all([
        InvoiceLine(invoice_id=invoice.id, kind="adjustment", description="Router", quantity=1,
                    unit_price_cents=4900, amount_cents=4900, tax_rate_bp=1600, tax_cents=784),
        InvoiceLine(invoice_id=draft.id, kind="adjustment", description="Installation", quantity=1,
                    unit_price_cents=2500, amount_cents=2500, tax_rate_bp=1600, tax_cents=400),
        PaymentAllocation(payment_id=payment.id, invoice_id=invoice.id, amount_cents=1000),
        Notification(customer_id=customer_id, invoice_id=invoice.id, kind="invoice", recipient="a@mail.example",
                     subject="Invoice INV-2025-000007", status="failed", attempts=3, last_error="SMTP down"),
    ])
    db.session.flush()
    ids = {"invoice": invoice.id, "draft": draft.id, "payment": payment.id, "job_run": job_run.id,
           "notification": db.session.scalar(db.select(Notification.id).where(Notification.invoice_id == invoice.id))}
    db.session.commit()
    return ids


def document_records(customer_id: int) -> dict:
    """Commit a credit note and a checked customers import for the pages that show one; return the URL arguments."""
    from isp_admin.models import CreditNote
    from isp_admin.services.imports import uploads

    note = CreditNote(number="CN-2025-000003", customer_id=customer_id, kind="manual", reason="Goodwill",
                      issue_date=date(2026, 1, 12), currency="USD", subtotal_cents=1000, tax_cents=160,
                      amount_cents=1160)
    db.session.add(note)
    checked = uploads.upload("customers", "peer.csv", b"name,email\nPage Scan,page.scan@mail.example\n")
    db.session.commit()
    return {"credit_note_id": note.id, "import_id": checked.id, "kind": "customers", "name": "missing.eml"}

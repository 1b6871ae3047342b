"""/api/billing/: invoices (send, pay, issue, void), payments, stats, and invoice generation (one or a run)."""
from __future__ import annotations

from flask import g, url_for

from isp_admin.api.auth import api_access
from isp_admin.api.billing import schemas as s
from isp_admin.api.common import api_blueprint, documented, list_envelope, page_window
from isp_admin.api.envelope import envelope
from isp_admin.api.idempotency import idempotent, transactional
from isp_admin.errors import Invalid
from isp_admin.jobs.queue import start_run
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.billing import payments
from isp_admin.services.billing import queries as invoice_queries
from isp_admin.services.billing import run as billing
from isp_admin.services.messaging import delivery
from isp_admin.services.platform import job_runs
from isp_admin.services.platform.clock import today

blp = api_blueprint("api_billing", __name__, "/api/billing",
                    "Billing: invoices, payments, figures, and invoice generation.")


def _invoice_data(invoice_id: int) -> dict:
    """An invoice with its lines and applied money, from the same loader as the invoice page."""
    detail = invoice_queries.invoice_detail(invoice_id)
    return {
        **{field: getattr(detail.invoice, field) for field in s.InvoiceDetailSchema._declared_fields
           if field not in ("lines", "payments", "credits")},
        "lines": detail.lines,
        "payments": [{"payment_id": p.id, "amount_cents": a.amount_cents, "received_on": p.received_on,
                      "method": p.method, "reversed": a.reversed_at is not None} for a, p in detail.payments],
        "credits": [{"credit_note_id": n.id, "credit_note_number": n.number, "amount_cents": a.amount_cents,
                     "reversed": a.reversed_at is not None} for a, n in detail.credits],
    }


def _payment_data(payment_id: int) -> dict:
    detail = invoice_queries.payment_detail(payment_id)
    return {
        **{field: getattr(detail.payment, field) for field in s.PaymentSchema._declared_fields},
        "allocations": [{"invoice_id": i.id, "invoice_number": i.number, "amount_cents": a.amount_cents,
                         "reversed": a.reversed_at is not None} for a, i in detail.allocations],
        "allocated_cents": detail.allocated_cents, "credit_cents": detail.credit_cents,
    }


def _not_future(day, field: str):
    if day is not None and day > today():
        raise Invalid("That day is in the future.", {field: "Today or earlier."})
    return day or today()


def _token_scope() -> str:
    # Payments made with one token's keys never collide with another's, nor with the staff pages'; `idempotent`
    # adds the key's generation, so a key reused after it expired may record a new payment.
    return g.get("idempotency_scope") or f"api-token:{g.api_token.id}"


# --- invoices ---------------------------------------------------------------------------------------------------

@blp.route("/invoices/", methods=["GET"])
@api_access("read", "view")
@blp.arguments(s.InvoiceListQuery(), location="query", as_kwargs=False)
@blp.response(200, s.InvoiceList)
@documented(blp)
def list_invoices(args):
    """List invoices: filter by status, customer, number, issue and due dates, total; order; page."""
    page = invoice_queries.list_invoices(
        status=args.get("status"), customer=args.get("customer"), number=args.get("search"),
        issued_from=args.get("issued_from"), issued_to=args.get("issued_to"), due_from=args.get("due_from"),
        due_to=args.get("due_to"), min_total=args.get("min_total_cents"), max_total=args.get("max_total_cents"),
        ordering=args["ordering"], **page_window(args))
    return list_envelope(page, args)


@blp.route("/invoices/", methods=["POST"])
@api_access("billing", "billing.edit")
@idempotent
@blp.arguments(s.InvoiceCreate)
@blp.response(201, s.InvoiceOne)
@documented(blp, 404, 409, 415, 422)
def create_invoice(values):
    """Create a draft invoice of ad hoc lines (or issue it at once with `issue: true`). Idempotency-Key honoured."""
    invoice = invoice_service.create_draft(values["customer_id"], values["lines"], today())
    if values["issue"]:
        invoice_service.issue(invoice.id, today())
    message = "Invoice issued." if values["issue"] else "Draft invoice created."
    return envelope(_invoice_data(invoice.id), message), 201, {"Location": f"/api/billing/invoices/{invoice.id}/"}


@blp.route("/invoices/<id:invoice_id>/", methods=["GET"])
@api_access("read", "view")
@blp.response(200, s.InvoiceOne)
@documented(blp, 404)
def get_invoice(invoice_id: int):
    """Return an invoice with its lines and the payments and credits applied to it."""
    return envelope(_invoice_data(invoice_id))


@blp.route("/invoices/<id:invoice_id>/", methods=["PUT"])
@api_access("billing", "billing.edit")
@transactional
@blp.arguments(s.InvoiceReplace)
@blp.response(200, s.InvoiceOne)
@documented(blp, 404, 415, 422)
def replace_invoice(values, invoice_id: int):
    """Replace a draft's lines; an issued invoice is refused with BUSINESS_RULE_VIOLATION (void it instead)."""
    invoice_service.replace_draft_lines(invoice_id, values["lines"])
    return envelope(_invoice_data(invoice_id), "Draft updated.")


@blp.route("/invoices/<id:invoice_id>/", methods=["DELETE"])
@api_access("billing", "billing.edit")
@transactional
@blp.response(200, s.InvoiceOne)
@documented(blp, 404, 422)
def delete_invoice(invoice_id: int):
    """Delete a draft; an issued invoice is refused with BUSINESS_RULE_VIOLATION (void it instead)."""
    data = invoice_service.delete_draft(invoice_id, describe=_invoice_data)
    return envelope(data, "Draft deleted.")


@blp.route("/invoices/<id:invoice_id>/issue/", methods=["POST"])
@api_access("billing", "billing.edit")
@transactional
@blp.response(200, s.InvoiceOne)
@documented(blp, 404, 422)
def issue_invoice(invoice_id: int):
    """Issue a draft: it gets its number and due date, and any credit the customer holds."""
    invoice_service.issue(invoice_id, today())
    return envelope(_invoice_data(invoice_id), "Invoice issued.")


@blp.route("/invoices/<id:invoice_id>/void/", methods=["POST"])
@api_access("billing", "billing.edit")
@transactional
@blp.arguments(s.VoidInput)
@blp.response(200, s.InvoiceOne)
@documented(blp, 404, 415, 422)
def void_invoice(values, invoice_id: int):
    """Void an issued invoice with a reason: a credit note cancels it; money applied becomes credit."""
    note = invoice_service.void(invoice_id, values["reason"], today())
    return envelope(_invoice_data(invoice_id), f"Invoice void; credit note {note.number} issued.")


@blp.route("/invoices/<id:invoice_id>/send/", methods=["POST"])
@api_access("billing", "billing.edit")
@transactional
@blp.response(200, s.NotificationOne, description="Sent (status sent), or kept in the outbox for a retry "
                                                  "(status queued or failed, with last_error).")
@documented(blp, 404, 422)
def send_invoice(invoice_id: int):
    """Email an issued invoice (with its PDF) to the customer now."""
    notification = delivery.send_invoice(invoice_id)
    message = ("Invoice sent." if notification.status == "sent"
               else f"The invoice could not be sent now; it is {notification.status} in the outbox.")
    return envelope(notification, message)


@blp.route("/invoices/<id:invoice_id>/pay/", methods=["POST"])
@api_access("billing", "billing.edit")
@idempotent
@blp.arguments(s.PayInput)
@blp.response(201, s.PaymentOne)
@documented(blp, 404, 409, 415, 422)
def pay_invoice(values, invoice_id: int):
    """Record a payment against this invoice (default: its balance). Idempotency-Key honoured."""
    invoice = invoice_service.get_invoice(invoice_id)
    # No amount: the balance as it stands under the customer's lock (the service reads it), not as read here.
    payment, _ = payments.record_payment(
        invoice.customer_id, values.get("amount_cents"), values["method"],
        _not_future(values.get("received_on"), "received_on"),
        today(), reference=values.get("reference"), invoice_id=invoice.id,
        idempotency_key=g.get("idempotency_key"), idempotency_scope=_token_scope())
    return envelope(_payment_data(payment.id), "Payment recorded."), 201, {
        "Location": f"/api/billing/payments/{payment.id}/"}


# --- payments ---------------------------------------------------------------------------------------------------

@blp.route("/payments/", methods=["GET"])
@api_access("read", "view")
@blp.arguments(s.PaymentListQuery(), location="query", as_kwargs=False)
@blp.response(200, s.PaymentList)
@documented(blp)
def list_payments(args):
    """List payments: filter by customer, method, status, received dates, amount; order; page."""
    page = invoice_queries.list_payments(
        customer=args.get("customer"), method=args.get("method"), status=args.get("status"),
        received_from=args.get("received_from"), received_to=args.get("received_to"),
        min_amount=args.get("min_amount_cents"), max_amount=args.get("max_amount_cents"),
        ordering=args["ordering"], **page_window(args))
    return list_envelope(page, args)


@blp.route("/payments/", methods=["POST"])
@api_access("billing", "billing.edit")
@idempotent
@blp.arguments(s.PaymentCreate)
@blp.response(201, s.PaymentOne)
@documented(blp, 404, 409, 415, 422)
def record_payment(values):
    """Record a payment: the named invoice first, then the oldest due; the rest is credit. Idempotency-Key honoured.

    A payment that clears a suspended customer's overdue debt reactivates their service in the same transaction.
    """
    payment, _ = payments.record_payment(
        values["customer_id"], values["amount_cents"], values["method"],
        _not_future(values.get("received_on"), "received_on"), today(), reference=values.get("reference"),
        invoice_id=values.get("invoice_id"), idempotency_key=g.get("idempotency_key"),
        idempotency_scope=_token_scope())
    return envelope(_payment_data(payment.id), "Payment recorded."), 201, {
        "Location": f"/api/billing/payments/{payment.id}/"}


@blp.route("/payments/<id:payment_id>/", methods=["GET"])
@api_access("read", "view")
@blp.response(200, s.PaymentOne)
@documented(blp, 404)
def get_payment(payment_id: int):
    """Return a payment with where its money went."""
    return envelope(_payment_data(payment_id))


@blp.route("/payments/<id:payment_id>/reverse/", methods=["POST"])
@api_access("billing", "billing.edit")
@transactional
@blp.arguments(s.ReverseInput)
@blp.response(200, s.PaymentOne)
@documented(blp, 404, 415, 422)
def reverse_payment(values, payment_id: int):
    """Reverse a payment (a bounced transfer): its allocations are undone and the invoices reopen."""
    payments.reverse_payment(payment_id, values["reason"], today())
    return envelope(_payment_data(payment_id), "Payment reversed.")


# --- stats ------------------------------------------------------------------------------------------------------

@blp.route("/stats/invoices/", methods=["GET"])
@api_access("read", "view")
@blp.arguments(s.InvoiceStatsQuery, location="query", as_kwargs=False)
@blp.response(200, s.InvoiceStats)
@documented(blp)
def invoice_stats(args):
    """Invoice figures by status (issued in an optional date range): invoiced, outstanding, overdue."""
    return envelope(invoice_queries.invoice_stats(args.get("issued_from"), args.get("issued_to")))


@blp.route("/stats/payments/", methods=["GET"])
@api_access("read", "view")
@blp.arguments(s.PaymentStatsQuery, location="query", as_kwargs=False)
@blp.response(200, s.PaymentStats)
@documented(blp)
def payment_stats(args):
    """Payment figures by method (received in an optional date range), and reversals."""
    return envelope(invoice_queries.payment_stats(args.get("received_from"), args.get("received_to")))


# --- generation -------------------------------------------------------------------------------------------------

@blp.route("/generate-invoice/", methods=["POST"])
@api_access("billing", "billing.edit")
@idempotent
@blp.arguments(s.GenerateInvoiceInput)
@blp.response(201, s.MaybeInvoice, description="The invoice made; or 200 with data null when nothing is due.")
@blp.alt_response(200, schema=s.MaybeInvoice, description="Nothing is due today: no invoice (data is null).")
@documented(blp, 404, 409, 415, 422)
def generate_invoice(values):
    """Bill one customer now for everything due up to today (at most once per period). Idempotency-Key honoured."""
    invoice = billing.generate_invoice_for_customer(values["customer_id"], today())
    if invoice is None:
        return envelope(None, "Nothing is due for this customer today: no invoice was made."), 200
    return envelope(_invoice_data(invoice.id), f"Invoice {invoice.number} issued."), 201, {
        "Location": f"/api/billing/invoices/{invoice.id}/"}


@blp.route("/bulk-generate/", methods=["POST"])
@api_access("billing", "billing.run")
@idempotent
@blp.arguments(s.BulkGenerateInput)
@blp.response(202, s.JobProgress)
@documented(blp, 409, 415, 422, 503)
def bulk_generate(values):
    """Start a billing run in the background; poll its progress_url. Idempotency-Key honoured.

    Runs are safe to repeat: each subscription-period is billed at most once whatever runs overlap.
    """
    as_of = values.get("as_of") or today()  # the rule for a run's date is the step table's (start_run checks)
    run = start_run(kind=values["kind"], as_of=as_of, triggered_by=f"{g.api_token.user.email} (API)")
    return envelope(_progress(run.id), "Billing run started."), 202, {"Location": _progress_url(run.id)}


@blp.route("/bulk-generate/<id:job_id>/", methods=["GET"])
@api_access("read", "view")
@blp.response(200, s.JobProgress)
@documented(blp, 404)
def bulk_generate_progress(job_id: int):
    """A billing run's live progress: status, chunks done of total, percent, counts."""
    return envelope(_progress(job_id))


def _progress_url(job_id: int) -> str:
    return url_for("api_billing.bulk_generate_progress", job_id=job_id)


def _progress(job_id: int) -> dict:
    progress = job_runs.progress(job_id)
    steps = [{"id": step["id"], "kind": step["kind"], "status": step["status"], "done_chunks": step["done_chunks"],
              "total_chunks": step["total_chunks"]} for step in progress["steps"]]
    return {**progress, "steps": steps, "progress_url": _progress_url(job_id)}

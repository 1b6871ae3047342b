"""Schemas of the billing resources: invoices, payments, stats and job runs (money in integer minor units)."""
from __future__ import annotations

import marshmallow as ma

from isp_admin.api.arguments import NotBlank
from isp_admin.api.common import ListQuery, ordering_field
from isp_admin.api.envelope import envelope_schema
from isp_admin.models.invoices import INVOICE_STATUSES
from isp_admin.models.payments import PAYMENT_METHODS, PAYMENT_STATUSES
from isp_admin.services.billing.queries import INVOICE_ORDERINGS, PAYMENT_ORDERINGS

ID = {"validate": ma.validate.Range(min=1, max=2**31 - 1)}
CENTS = {"validate": ma.validate.Range(min=0, max=10**11)}
CUSTOMER_FILTER = ma.fields.String(validate=ma.validate.Length(min=1, max=40),
                                   metadata={"description": "A customer id or account number."})


class InvoiceLineSchema(ma.Schema):
    """One line of an invoice."""

    id = ma.fields.Integer()
    kind = ma.fields.String()
    description = ma.fields.String()
    subscription_id = ma.fields.Integer(allow_none=True)
    period_start = ma.fields.Date(allow_none=True)
    period_end = ma.fields.Date(allow_none=True, metadata={"description": "Exclusive: the day after the period."})
    quantity = ma.fields.Integer()
    unit_price_cents = ma.fields.Integer()
    amount_cents = ma.fields.Integer()
    tax_rate_bp = ma.fields.Integer()
    tax_cents = ma.fields.Integer()


class InvoiceSchema(ma.Schema):
    """An invoice; `number` is null while it is a draft."""

    id = ma.fields.Integer()
    number = ma.fields.String(allow_none=True)
    customer_id = ma.fields.Integer()
    status = ma.fields.String(metadata={"enum": list(INVOICE_STATUSES)})
    issue_date = ma.fields.Date()
    due_date = ma.fields.Date()
    currency = ma.fields.String()
    subtotal_cents = ma.fields.Integer()
    tax_cents = ma.fields.Integer()
    total_cents = ma.fields.Integer()
    amount_paid_cents = ma.fields.Integer()
    credit_applied_cents = ma.fields.Integer()
    balance_cents = ma.fields.Integer()
    sent_at = ma.fields.AwareDateTime(allow_none=True)
    paid_at = ma.fields.AwareDateTime(allow_none=True)
    voided_at = ma.fields.AwareDateTime(allow_none=True)
    created_at = ma.fields.AwareDateTime()


class InvoiceListItem(InvoiceSchema):
    """An invoice in a list, with its customer's name and account number."""

    customer_name = ma.fields.String()
    account_number = ma.fields.String()


class AppliedPayment(ma.Schema):
    """Part of a payment applied to this invoice."""

    payment_id = ma.fields.Integer()
    amount_cents = ma.fields.Integer()
    received_on = ma.fields.Date()
    method = ma.fields.String()
    reversed = ma.fields.Boolean()


class AppliedCredit(ma.Schema):
    """Part of a credit note applied to this invoice."""

    credit_note_id = ma.fields.Integer()
    credit_note_number = ma.fields.String()
    amount_cents = ma.fields.Integer()
    reversed = ma.fields.Boolean()


class InvoiceDetailSchema(InvoiceSchema):
    """An invoice with its lines and the money applied to it."""

    void_reason = ma.fields.String(allow_none=True)
    lines = ma.fields.List(ma.fields.Nested(InvoiceLineSchema))
    payments = ma.fields.List(ma.fields.Nested(AppliedPayment))
    credits = ma.fields.List(ma.fields.Nested(AppliedCredit))


class LineInput(ma.Schema):
    """An ad hoc invoice line."""

    description = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=255), NotBlank()])
    quantity = ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1, max=10_000))
    unit_price_cents = ma.fields.Integer(required=True, validate=ma.validate.Range(min=0, max=10**10))
    tax_rate_bp = ma.fields.Integer(load_default=0, validate=ma.validate.Range(min=0, max=10000))


class InvoiceCreate(ma.Schema):
    """A draft invoice of ad hoc lines; `issue: true` numbers and issues it at once."""

    customer_id = ma.fields.Integer(required=True, **ID)
    lines = ma.fields.List(ma.fields.Nested(LineInput), required=True,
                           validate=ma.validate.Length(min=1, max=200))
    issue = ma.fields.Boolean(load_default=False)


class InvoiceReplace(ma.Schema):
    """A draft's new lines (an issued invoice is never edited: void it instead)."""

    lines = ma.fields.List(ma.fields.Nested(LineInput), required=True,
                           validate=ma.validate.Length(min=1, max=200))


class VoidInput(ma.Schema):
    """Why the invoice is void."""

    reason = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=500), NotBlank()])


class PayInput(ma.Schema):
    """A payment against this invoice; the amount defaults to its balance, any excess becomes credit."""

    amount_cents = ma.fields.Integer(validate=ma.validate.Range(min=1, max=10**11))
    method = ma.fields.String(required=True, validate=ma.validate.OneOf(PAYMENT_METHODS))
    received_on = ma.fields.Date(metadata={"description": "Default: today; never in the future."})
    reference = ma.fields.String(allow_none=True, validate=ma.validate.Length(max=120))


class PaymentCreate(PayInput):
    """A payment from a customer: applied to the named invoice first, then the oldest due; the rest is credit."""

    customer_id = ma.fields.Integer(required=True, **ID)
    amount_cents = ma.fields.Integer(required=True, validate=ma.validate.Range(min=1, max=10**11))
    invoice_id = ma.fields.Integer(allow_none=True, **ID)


class ReverseInput(ma.Schema):
    """Why the payment is reversed (a bounced transfer, a chargeback)."""

    reason = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=500), NotBlank()])


class PaymentSchema(ma.Schema):
    """A payment; reversed, never deleted."""

    id = ma.fields.Integer()
    customer_id = ma.fields.Integer()
    amount_cents = ma.fields.Integer()
    currency = ma.fields.String()
    method = ma.fields.String(metadata={"enum": list(PAYMENT_METHODS)})
    reference = ma.fields.String(allow_none=True)
    received_on = ma.fields.Date()
    status = ma.fields.String(metadata={"enum": list(PAYMENT_STATUSES)})
    recorded_by = ma.fields.String()
    reversed_at = ma.fields.AwareDateTime(allow_none=True)
    reversal_reason = ma.fields.String(allow_none=True)
    created_at = ma.fields.AwareDateTime()


class PaymentListItem(PaymentSchema):
    """A payment in a list, with its customer's name and account number."""

    customer_name = ma.fields.String()
    account_number = ma.fields.String()


class PaymentAllocationSchema(ma.Schema):
    """Where part of the payment went."""

    invoice_id = ma.fields.Integer()
    invoice_number = ma.fields.String(allow_none=True)
    amount_cents = ma.fields.Integer()
    reversed = ma.fields.Boolean()


class PaymentDetailSchema(PaymentSchema):
    """A payment with its allocations and the remainder held as credit."""

    allocations = ma.fields.List(ma.fields.Nested(PaymentAllocationSchema))
    allocated_cents = ma.fields.Integer()
    credit_cents = ma.fields.Integer()


class InvoiceListQuery(ListQuery):
    """Filters of the invoice list (amounts in minor units, dates inclusive)."""

    status = ma.fields.String(validate=ma.validate.OneOf(INVOICE_STATUSES))
    customer = CUSTOMER_FILTER
    search = ma.fields.String(validate=ma.validate.Length(min=1, max=40),
                              metadata={"description": "Part of an invoice number."})
    issued_from = ma.fields.Date()
    issued_to = ma.fields.Date()
    due_from = ma.fields.Date()
    due_to = ma.fields.Date()
    min_total_cents = ma.fields.Integer(**CENTS)
    max_total_cents = ma.fields.Integer(**CENTS)
    ordering = ordering_field(INVOICE_ORDERINGS, "-id")


class PaymentListQuery(ListQuery):
    """Filters of the payment list (amounts in minor units, dates inclusive)."""

    customer = CUSTOMER_FILTER
    method = ma.fields.String(validate=ma.validate.OneOf(PAYMENT_METHODS))
    status = ma.fields.String(validate=ma.validate.OneOf(PAYMENT_STATUSES))
    received_from = ma.fields.Date()
    received_to = ma.fields.Date()
    min_amount_cents = ma.fields.Integer(**CENTS)
    max_amount_cents = ma.fields.Integer(**CENTS)
    ordering = ordering_field(PAYMENT_ORDERINGS, "-id")


class InvoiceStatsQuery(ma.Schema):
    """The issue-date range (inclusive; both optional)."""

    issued_from = ma.fields.Date()
    issued_to = ma.fields.Date()


class PaymentStatsQuery(ma.Schema):
    """The received-date range (inclusive; both optional)."""

    received_from = ma.fields.Date()
    received_to = ma.fields.Date()


class StatusFigures(ma.Schema):
    """Invoices of one status."""

    count = ma.fields.Integer()
    total_cents = ma.fields.Integer()
    balance_cents = ma.fields.Integer()


class MethodFigures(ma.Schema):
    """Completed payments by one method."""

    count = ma.fields.Integer()
    amount_cents = ma.fields.Integer()


class InvoiceStatsSchema(ma.Schema):
    """Invoice figures: by status, invoiced, outstanding and overdue."""

    issued_from = ma.fields.Date(allow_none=True)
    issued_to = ma.fields.Date(allow_none=True)
    currency = ma.fields.String()
    by_status = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(StatusFigures))
    invoiced_cents = ma.fields.Integer()
    outstanding_cents = ma.fields.Integer()
    overdue_cents = ma.fields.Integer()
    overdue_count = ma.fields.Integer()


class PaymentStatsSchema(ma.Schema):
    """Payment figures: received (completed) by method, and reversals."""

    received_from = ma.fields.Date(allow_none=True)
    received_to = ma.fields.Date(allow_none=True)
    currency = ma.fields.String()
    count = ma.fields.Integer()
    received_cents = ma.fields.Integer()
    reversed_count = ma.fields.Integer()
    reversed_cents = ma.fields.Integer()
    by_method = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Nested(MethodFigures))


class GenerateInvoiceInput(ma.Schema):
    """Bill one customer now for everything due up to today."""

    customer_id = ma.fields.Integer(required=True, **ID)


class BulkGenerateInput(ma.Schema):
    """Start a billing run in the background."""

    kind = ma.fields.String(load_default="generate_monthly_invoices",
                            validate=ma.validate.OneOf(("generate_monthly_invoices", "nightly")),
                            metadata={"description": "generate_monthly_invoices, or the whole nightly run."})
    as_of = ma.fields.Date(metadata={"description": "Default: today; never in the future."})


class JobStep(ma.Schema):
    """One step of a nightly run."""

    id = ma.fields.Integer()
    kind = ma.fields.String()
    status = ma.fields.String()
    done_chunks = ma.fields.Integer()
    total_chunks = ma.fields.Integer()


class JobProgressSchema(ma.Schema):
    """A background run's live progress."""

    id = ma.fields.Integer()
    kind = ma.fields.String()
    as_of = ma.fields.String()
    status = ma.fields.String(metadata={"enum": ["running", "succeeded", "failed", "partial"]})
    finished = ma.fields.Boolean()
    done = ma.fields.Integer()
    total = ma.fields.Integer()
    percent = ma.fields.Integer()
    counts = ma.fields.Dict(keys=ma.fields.String(), values=ma.fields.Integer())
    started_at = ma.fields.String(allow_none=True)
    finished_at = ma.fields.String(allow_none=True)
    error = ma.fields.String(allow_none=True)
    triggered_by = ma.fields.String()
    progress_url = ma.fields.String()
    steps = ma.fields.List(ma.fields.Nested(JobStep))


class NotificationSchema(ma.Schema):
    """The invoice's email in the outbox."""

    id = ma.fields.Integer()
    status = ma.fields.String(metadata={"enum": ["queued", "sent", "failed"]})
    recipient = ma.fields.String(allow_none=True)
    attempts = ma.fields.Integer()
    last_error = ma.fields.String(allow_none=True)
    sent_at = ma.fields.AwareDateTime(allow_none=True)


InvoiceList = envelope_schema("InvoiceList", InvoiceListItem, many=True)
InvoiceOne = envelope_schema("InvoiceOne", InvoiceDetailSchema)
MaybeInvoice = envelope_schema("GeneratedInvoice", InvoiceDetailSchema, nullable=True)
PaymentList = envelope_schema("PaymentList", PaymentListItem, many=True)
PaymentOne = envelope_schema("PaymentOne", PaymentDetailSchema)
# Envelope names differ from the data schemas' component names (apispec drops "Schema": InvoiceStatsSchema is
# "InvoiceStats"); a clash made `data` refer to the envelope itself in the spec.
InvoiceStats = envelope_schema("InvoiceStatsOne", InvoiceStatsSchema)
PaymentStats = envelope_schema("PaymentStatsOne", PaymentStatsSchema)
JobProgress = envelope_schema("JobProgressOne", JobProgressSchema)
NotificationOne = envelope_schema("InvoiceDelivery", NotificationSchema)

"""Payment forms: record (with a one-time idempotency key), reverse, and the list's filters."""
from __future__ import annotations

import uuid

from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, HiddenField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, Optional, ValidationError

from isp_admin.models.payments import PAYMENT_METHODS, PAYMENT_STATUSES
from isp_admin.services.billing.money import format_cents
from isp_admin.services.platform.clock import today
from isp_admin.web.fields import MoneyField

# Provider payments arrive through the API with the provider's reference; staff record the rest.
STAFF_METHODS = [(m, m.replace("_", " ").capitalize()) for m in PAYMENT_METHODS if m != "provider"]


class PaymentForm(FlaskForm):
    """Money received from one customer, optionally for one of its open invoices."""

    customer_id = HiddenField(validators=[DataRequired()])
    # Made when the form is shown; a second POST of the same form carries the same key and records nothing new.
    idempotency_key = HiddenField(validators=[DataRequired(message="Reload the form and try again."),
                                              Length(max=255)])
    amount_cents = MoneyField("Amount", validators=[InputRequired(message="Enter the amount received.")])
    method = SelectField("Method", choices=STAFF_METHODS)
    received_on = DateField("Received on", validators=[InputRequired(message="Enter a date.")])
    reference = StringField("Reference", validators=[Optional(), Length(max=120)],
                            description="Receipt, transfer or transaction number.")
    # Not limited to the choices shown: a retry must still reach the service after its invoice got paid, and the
    # service refuses another customer's invoice itself.
    invoice_id = SelectField("Apply first to", choices=[], validate_choice=False)
    # Shown only beside the payments this one looks like (payments.similar_payments): ticking it records it anyway.
    confirm_duplicate = BooleanField("Record it anyway: this is other money, not one of the payments above")

    @classmethod
    def for_customer(cls, customer_id: int, invoices, invoice_id: int | None = None,
                     formdata=None) -> PaymentForm:
        """Build the form for a customer, offering its open invoices; a fresh key when first shown."""
        form = cls(formdata=formdata) if formdata is not None else cls()
        form.invoice_id.choices = [("", "Oldest due first")] + [
            (str(i), f"{number} · {format_cents(balance)} due {due:%Y-%m-%d}") for i, number, balance, due in invoices]
        if not form.is_submitted():
            form.customer_id.data = str(customer_id)
            form.idempotency_key.data = uuid.uuid4().hex
            form.received_on.data = today()
            if invoice_id is not None and any(i == invoice_id for i, *_ in invoices):
                form.invoice_id.data = str(invoice_id)
        return form

    def validate_invoice_id(self, field) -> None:
        """An invoice id, or nothing."""
        if field.data and not (field.data.isdigit() and int(field.data) < 2**63):
            raise ValidationError("Choose an invoice from the list.")

    def chosen_invoice(self) -> int | None:
        """The invoice to pay first, if any."""
        return int(self.invoice_id.data) if self.invoice_id.data else None


class CustomerPickForm(FlaskForm):
    """Find the customer a payment is from (GET, no CSRF)."""

    class Meta:
        csrf = False

    customer = StringField("Customer id or account number", validators=[DataRequired(), Length(max=40)])


class ReverseForm(FlaskForm):
    """Reverse a payment (a bounced transfer, a mistake): the reason is required."""

    reason = TextAreaField("Reason", validators=[DataRequired(message="Say why the payment is reversed."),
                                                 Length(max=500)])


class PaymentFilterForm(FlaskForm):
    """Filters for the payment list (GET, no CSRF)."""

    class Meta:
        csrf = False

    customer = StringField("Customer id or account", validators=[Optional(), Length(max=40)])
    method = SelectField("Method", choices=[("", "Any method")] + [(m, m.replace("_", " ")) for m in PAYMENT_METHODS],
                         validators=[Optional()])
    status = SelectField("Status", choices=[("", "Any status")] + [(s, s) for s in PAYMENT_STATUSES],
                         validators=[Optional()])
    received_from = DateField("Received from", validators=[Optional()])
    received_to = DateField("Received to", validators=[Optional()])

    def filters(self) -> dict:
        """Return the filters for invoice_queries.list_payments."""
        return {name: getattr(self, name).data or None for name in
                ("customer", "method", "status", "received_from", "received_to")}


class RefundForm(FlaskForm):
    """Refund an online payment at its provider: the reason is required."""

    reason = TextAreaField("Reason", validators=[DataRequired(message="Say why the payment is refunded."),
                                                 Length(max=500)])


class RecordRefundForm(FlaskForm):
    """Record a refund made in the provider's own dashboard: its reference and the reason."""

    reference = StringField("Provider's refund reference",
                            validators=[DataRequired(message="Enter the refund's reference at the provider."),
                                        Length(max=120)])
    reason = TextAreaField("Reason", validators=[DataRequired(message="Say why the payment was refunded."),
                                                 Length(max=500)])


class ProviderSwitchForm(FlaskForm):
    """Offer a payment provider to customers, or stop offering it."""

    provider = HiddenField(validators=[DataRequired(), Length(max=32)])
    enabled = SelectField(choices=[("1", "Enable"), ("0", "Disable")])


class ResolveEventForm(FlaskForm):
    """Say what was done about a provider notification that made no payment."""

    resolution = TextAreaField("What was done", validators=[
        DataRequired(message="Say what was done (recorded by hand, refunded at the provider…)."), Length(max=500)])

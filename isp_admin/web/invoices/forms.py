"""Invoice forms: the list's filters, ad hoc drafts (up to five lines), void, statement range."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    DateField,
    FieldList,
    Form,
    FormField,
    IntegerField,
    RadioField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from isp_admin.models.invoices import INVOICE_STATUSES
from isp_admin.web.fields import MoneyField, PercentField

MAX_LINES = 5


class InvoiceFilterForm(FlaskForm):
    """Filters and search for the invoice list (GET, no CSRF)."""

    class Meta:
        csrf = False

    number = StringField("Number", validators=[Optional(), Length(max=40)])
    status = SelectField("Status", choices=[("", "Any status")] + [(s, s.title()) for s in INVOICE_STATUSES],
                         validators=[Optional()])
    customer = StringField("Customer id or account", validators=[Optional(), Length(max=40)])
    issued_from = DateField("Issued from", validators=[Optional()])
    issued_to = DateField("Issued to", validators=[Optional()])
    due_from = DateField("Due from", validators=[Optional()])
    due_to = DateField("Due to", validators=[Optional()])
    min_total = MoneyField("Total from", validators=[Optional()])
    max_total = MoneyField("Total to", validators=[Optional()])

    def filters(self) -> dict:
        """Return the filters for invoice_queries.list_invoices."""
        return {name: getattr(self, name).data or None for name in
                ("number", "status", "customer", "issued_from", "issued_to", "due_from", "due_to")} | {
            "min_total": self.min_total.data, "max_total": self.max_total.data}

    def is_filtered(self) -> bool:
        """Whether any filter is set."""
        return any(value is not None for value in self.filters().values())


class LineForm(Form):
    """One ad hoc line: what, how many, at what price, taxed at what rate."""

    description = StringField("Description", validators=[Optional(), Length(max=255)])
    quantity = IntegerField("Qty", default=1, validators=[Optional(), NumberRange(1, 10_000)])
    unit_price_cents = MoneyField("Unit price", validators=[Optional()])
    tax_rate_bp = PercentField("Tax %")


class DraftForm(FlaskForm):
    """A draft invoice of up to five lines; blank lines are ignored."""

    lines = FieldList(FormField(LineForm), min_entries=MAX_LINES, max_entries=MAX_LINES)

    def validate_lines(self, field) -> None:
        """At least one line, and every described line has a price."""
        described = [entry for entry in field.entries if (entry.form.description.data or "").strip()]
        if not described:
            raise ValidationError("Describe at least one line.")
        unpriced = [entry for entry in described if entry.form.unit_price_cents.data is None
                    and not entry.form.unit_price_cents.errors]
        for entry in unpriced:
            entry.form.unit_price_cents.errors = ["Enter a price."]
        if unpriced:
            raise ValidationError("Every line needs a price.")

    def values(self) -> list[dict]:
        """Return the described lines for the invoice service."""
        return [{"description": entry.form.description.data.strip(), "quantity": entry.form.quantity.data or 1,
                 "unit_price_cents": entry.form.unit_price_cents.data, "tax_rate_bp": entry.form.tax_rate_bp.data}
                for entry in self.lines.entries if (entry.form.description.data or "").strip()]

    @classmethod
    def from_lines(cls, lines) -> DraftForm:
        """Build the form pre-filled with a draft's lines."""
        data = [{"description": line.description, "quantity": line.quantity,
                 "unit_price_cents": line.unit_price_cents, "tax_rate_bp": line.tax_rate_bp} for line in lines]
        return cls(formdata=None, data={"lines": data[:MAX_LINES]})


class VoidForm(FlaskForm):
    """Void an issued invoice: the reason is required and kept; then re-bill its periods, or not."""

    reason = TextAreaField("Reason", validators=[DataRequired(message="Say why the invoice is void."),
                                                 Length(max=500)])
    # Absent means void only: what voiding has always done.
    then = RadioField("Then", choices=[("rebill", "Re-bill its periods now on a new invoice"),
                                       ("nothing", "Void only: the customer is not charged for them again")],
                      default="nothing", validators=[Optional()])


class StatementForm(FlaskForm):
    """The statement's date range (GET, no CSRF)."""

    class Meta:
        csrf = False

    start = DateField("From", validators=[Optional()])
    end = DateField("To", validators=[Optional()])

    def validate_end(self, field) -> None:
        """The range runs forwards."""
        if field.data and self.start.data and field.data < self.start.data:
            raise ValidationError("The end is before the start.")

"""Credit note forms: the list's filters."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateField, SelectField, StringField
from wtforms.validators import Length, Optional, ValidationError

from isp_admin.services.billing.credit_notes import KINDS

KIND_WORDS = {"void": "Void of an invoice", "cancellation": "Cancellation", "plan_change": "Plan change",
              "manual": "By hand"}


class CreditNoteFilterForm(FlaskForm):
    """Filters and number search for the credit note list (GET, no CSRF)."""

    class Meta:
        csrf = False

    number = StringField("Number", validators=[Optional(), Length(max=40)])
    kind = SelectField("For", choices=[("", "Any reason")] + [(k, KIND_WORDS.get(k, k)) for k in KINDS],
                       validators=[Optional()])
    customer = StringField("Customer id or account", validators=[Optional(), Length(max=40)])
    issued_from = DateField("Issued from", validators=[Optional()])
    issued_to = DateField("Issued to", validators=[Optional()])

    def validate_issued_to(self, field) -> None:
        """The range ends on or after it starts."""
        if field.data and self.issued_from.data and field.data < self.issued_from.data:
            raise ValidationError("On or after the start.")

    def filters(self) -> dict:
        """Return the filters for credit_notes.list_credit_notes."""
        return {name: getattr(self, name).data or None
                for name in ("number", "kind", "customer", "issued_from", "issued_to")}

    def is_filtered(self) -> bool:
        """Whether any filter is set."""
        return any(value is not None for value in self.filters().values())

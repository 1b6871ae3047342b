"""Form fields shared by several features."""
from __future__ import annotations

from wtforms import StringField, ValidationError

from isp_admin.services.billing.money import cents_to_input, parse_money


class MoneyField(StringField):
    """A decimal amount typed by staff ('29.99'), held as integer cents in .data."""

    def _value(self) -> str:
        if self.raw_data:
            return self.raw_data[0]
        return cents_to_input(self.data)

    def process_formdata(self, valuelist) -> None:
        if not valuelist or not valuelist[0].strip():
            self.data = None
            return
        try:
            self.data = parse_money(valuelist[0])
        except ValueError as exc:
            self.data = None
            raise ValidationError(str(exc)) from None


class PercentField(StringField):
    """A tax rate typed as a percentage ('16' or '7.5'), held as basis points in .data."""

    def _value(self) -> str:
        if self.raw_data:
            return self.raw_data[0]
        if self.data is None:
            return ""
        whole, part = divmod(int(self.data), 100)
        return f"{whole}.{part:02d}".rstrip("0").rstrip(".")

    def process_formdata(self, valuelist) -> None:
        if not valuelist or not valuelist[0].strip():
            self.data = 0
            return
        try:
            cents = parse_money(valuelist[0].strip().rstrip("%"))
        except ValueError:
            self.data = None
            raise ValidationError("Enter a percentage such as 16 or 7.5.") from None
        if cents > 10000:
            self.data = None
            raise ValidationError("At most 100%.")
        self.data = cents

"""The reports' filters: an as-of date, or a range of months (GET, no CSRF)."""
from __future__ import annotations

from datetime import date

from flask_wtf import FlaskForm
from wtforms import DateField, MonthField, ValidationError
from wtforms.validators import Optional

from isp_admin.errors import Invalid
from isp_admin.services.platform.clock import today
from isp_admin.services.reporting.reports import month_range

# Far enough for any real ledger, near enough that date arithmetic on the bounds never overflows.
FIRST_YEAR, LAST_YEAR = 1970, 2999


def _plausible(_form, field) -> None:
    if field.data is not None and not FIRST_YEAR <= field.data.year <= LAST_YEAR:
        raise ValidationError(f"Pick a date between {FIRST_YEAR} and {LAST_YEAR}.")


class AsOfForm(FlaskForm):
    """The date a report is computed for (today when left empty)."""

    class Meta:
        csrf = False

    as_of = DateField("As of", validators=[Optional(), _plausible])

    def resolved(self) -> date:
        """Return the chosen date, or today (then shown in the field, so the page says which day it is)."""
        if self.as_of.data is None:
            self.as_of.data, self.as_of.raw_data = today(), []
        return self.as_of.data


class MonthRangeForm(FlaskForm):
    """A range of months: the last twelve by default, at most 36."""

    class Meta:
        csrf = False

    start = MonthField("From", validators=[Optional(), _plausible])
    end = MonthField("To", validators=[Optional(), _plausible])

    def validate(self, extra_validators=None) -> bool:
        """Check each month, then the range as a whole (order and length)."""
        if not super().validate(extra_validators):
            return False
        try:
            self.months = month_range(self.start.data, self.end.data, today())
        except Invalid as exc:
            for name, message in exc.details.items():
                getattr(self, name).errors.append(message)
            return False
        # Show the months actually reported, defaults included.
        for field, month in zip((self.start, self.end), self.months, strict=True):
            field.data, field.raw_data = month, []
        return True

    def resolved(self) -> tuple[date, date]:
        """Return (first month, last month) as first days, after validate()."""
        return self.months

"""The payment list's query: the filters (the dashboard links to a received date range) and the column sort."""
from __future__ import annotations

from wtforms import SelectField
from wtforms.validators import Optional

from isp_admin.services.billing.listing import PAYMENT_DEFAULT_SORT, PAYMENT_SORTS, sort_keys
from isp_admin.web.payments.forms import PaymentFilterForm


class PaymentListForm(PaymentFilterForm):
    """The list's filters and sort (GET, no CSRF); the column headers sort either way."""

    sort = SelectField("Sort", choices=[(key, key) for key in sort_keys(PAYMENT_SORTS)], default=PAYMENT_DEFAULT_SORT,
                       validators=[Optional()])

    def is_filtered(self) -> bool:
        """Whether any filter narrows the list."""
        return any(value is not None for value in self.filters().values())

    def chosen_sort(self) -> str:
        """The sort asked for, or the list's default (newest first)."""
        return self.sort.data or PAYMENT_DEFAULT_SORT

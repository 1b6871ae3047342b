"""The invoice list's query: the filters (with days past due, the dashboard's aging links) and the column sort."""
from __future__ import annotations

from wtforms import SelectField
from wtforms.validators import Optional

from isp_admin.services.billing.listing import INVOICE_DEFAULT_SORT, INVOICE_SORTS, OVERDUE_RANGES, sort_keys
from isp_admin.web.invoices.forms import InvoiceFilterForm

OVERDUE_LABELS = {"1-30": "1–30 days", "31-60": "31–60 days", "61-90": "61–90 days", "91-": "Over 90 days"}


class InvoiceListForm(InvoiceFilterForm):
    """The list's filters and sort (GET, no CSRF); the column headers sort either way."""

    overdue_days = SelectField("Days past due", validators=[Optional()],
                               choices=[("", "Any")] + [(key, OVERDUE_LABELS[key]) for key in OVERDUE_RANGES])
    sort = SelectField("Sort", choices=[(key, key) for key in sort_keys(INVOICE_SORTS)], default=INVOICE_DEFAULT_SORT,
                       validators=[Optional()])

    def filters(self) -> dict:
        """Return the filters for services.billing.listing."""
        return super().filters() | {"overdue_days": self.overdue_days.data or None}

    def chosen_sort(self) -> str:
        """The sort asked for, or the list's default (newest first)."""
        return self.sort.data or INVOICE_DEFAULT_SORT

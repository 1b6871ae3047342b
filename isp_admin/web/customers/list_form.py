"""The customer list's query: search, filters (with a subscription's suspension reason) and every column sort."""
from __future__ import annotations

from wtforms import SelectField
from wtforms.validators import Optional, ValidationError

from isp_admin.services.customers.accounts import SORTS
from isp_admin.services.customers.listing import REASONS
from isp_admin.web.customers.forms import CustomerFilterForm

SORT_LABELS = {"name": "Name A–Z", "-name": "Name Z–A", "account": "Account number", "-account": "Account, last first",
               "newest": "Newest first", "oldest": "Oldest first", "status": "Status", "-status": "Status, last first"}
MAX_PLAN_ID = 2**31 - 1


def _plan_id(value: str | None) -> int | None:
    """The plan id typed, or None for nothing or anything that is not a plain number."""
    return int(value) if value and value.isascii() and value.isdigit() else None


class CustomerListForm(CustomerFilterForm):
    """The list's search, filters and sort (GET, no CSRF); the column headers sort either way."""

    reason = SelectField("Suspended for", validators=[Optional()],
                         choices=[("", "Any reason")] + [(r, r.replace("_", " ").capitalize()) for r in REASONS])
    sort = SelectField("Sort", choices=[(key, SORT_LABELS.get(key, key)) for key in SORTS], default="name",
                       validators=[Optional()])

    def validate_plan(self, field) -> None:
        """A plan id fits the plans' id column (a longer number matches no plan, and is refused as one)."""
        # WTForms runs this even after the field's Regexp refused the value: only a number reaches int().
        plan_id = None if field.errors else _plan_id(field.data)
        if plan_id is not None and plan_id > MAX_PLAN_ID:
            raise ValidationError("Not a plan.")

    def filters(self) -> dict:
        """Return the search and filters for services.customers.listing."""
        return {"q": self.q.data or "", "status": self.status.data or None, "reason": self.reason.data or None,
                "plan_id": _plan_id(self.plan.data)}

    def is_filtered(self) -> bool:
        """Whether a search or any filter narrows the list."""
        return any(self.filters().values())

    def chosen_sort(self) -> str:
        """The sort asked for, or the list's default."""
        return self.sort.data or "name"

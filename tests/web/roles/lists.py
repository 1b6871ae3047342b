"""Role cells for the lists' CSV exports and bulk actions (issue 16).

Reading and exporting is for every role; sending invoices or reminders in bulk needs billing.edit, suspending or
resuming service in bulk needs subscriptions.edit. The world's open invoice is past due and never reminded, and its
customer has active subscriptions, so each allowed apply really writes the audit event of its action.
"""
from __future__ import annotations

from tests.web.roles import EDITORS, EVERYONE, PLANNERS, Route

ROUTES = [
    Route("GET", "/customers/export.csv", EVERYONE),
    Route("GET", "/invoices/export.csv", EVERYONE),
    Route("GET", "/payments/export.csv", EVERYONE),
    Route("POST", "/bulk/invoices/preview", PLANNERS, {"action": "send_reminders", "ids": "<invoice>"}),
    Route("POST", "/bulk/invoices/apply", PLANNERS, {"action": "send_reminders", "ids": "<invoice>"},
          audit="invoice.remind"),
    Route("POST", "/bulk/customers/preview", EDITORS, {"action": "suspend", "ids": "<customer>"}),
    Route("POST", "/bulk/customers/apply", EDITORS, {"action": "suspend", "ids": "<customer>"},
          audit="subscription.suspend"),
    # Export selected is reading: every role may download the rows it can see.
    Route("POST", "/bulk/payments/export", EVERYONE, {"ids": "<payment>"}),
]

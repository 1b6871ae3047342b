"""Which role may do what: one table, read by the web decorator, the API and the token service alike."""
from __future__ import annotations

ALL_ROLES = frozenset({"admin", "billing", "support", "readonly"})
PERMISSIONS: dict[str, frozenset[str]] = {
    "view": ALL_ROLES,                                    # read any page of the panel
    "account": ALL_ROLES,                                 # one's own password and API tokens
    "customers.edit": frozenset({"admin", "billing", "support"}),
    # Service state. A plan change that issues an invoice or a credit note needs billing.edit as well
    # (web/subscriptions/views.py: support sees the amounts and is told to ask billing).
    "subscriptions.edit": frozenset({"admin", "billing", "support"}),
    "plans.edit": frozenset({"admin", "billing"}),
    "billing.edit": frozenset({"admin", "billing"}),      # invoices, payments, credit notes, notifications
    "billing.run": frozenset({"admin", "billing"}),       # start the nightly steps by hand
    "users.manage": frozenset({"admin"}),
    "network.manage": frozenset({"admin"}),               # routers (NAS) and their secrets, suspension policy
    "network.operate": frozenset({"admin", "support"}),   # disconnect a session, retry or re-send a CoA
    "payments.providers": frozenset({"admin"}),           # which payment providers customers are offered
    "health.view": frozenset({"admin"}),                  # the detailed health report (or a `health` token)
}

"""Audit events and job counts in the staff's words: names for ids, money for cents, words for codes and dates.

"plan_id: 9 → 5" reads "Plan: Home 50 → Fibre 300", "amount_cents: 2000" reads "Amount: $20.00", and a
subscription is named by its PPPoE login. A page hands over the events it shows; every id they mention is resolved
in ONE statement (a UNION ALL of one SELECT per kind present), so the page runs the same queries for one event or
fifty; records the page has loaded already (a customer page's subscriptions and plans) cost no query at all. Money
is formatted by the caller's `money` (the web's filter), as everywhere else on the pages.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import String, cast, inspect, literal, select, union_all
from sqlalchemy.orm.util import identity_key

from isp_admin.extensions import db
from isp_admin.models import CreditNote, Customer, Invoice, Nas, Payment, Plan, Subscription, User

MAX_TEXT = 300  # a value longer than this (a note, an error) is cut: the page is a trail, not an archive

# Fields whose value is the id of a record of a kind, and what each kind is called on the page.
REFERENCES = {"plan_id": "plans", "from_plan_id": "plans", "to_plan_id": "plans", "subscription_id": "subscriptions",
              "customer_id": "customers", "invoice_id": "invoices", "credit_note_id": "credit_notes",
              "payment_id": "payments", "nas_id": "nas", "user_id": "users"}
NOUNS = {"plans": "Plan", "subscriptions": "Subscription", "customers": "Customer", "invoices": "Invoice",
         "credit_notes": "Credit note", "payments": "Payment", "nas": "Router", "users": "Staff user",
         "notifications": "Email", "api_tokens": "API token", "job_runs": "Billing run", "coa_requests": "CoA request",
         "portal_accounts": "Portal account", "plan_change_requests": "Plan change request",
         "payment_attempts": "Online payment", "provider_events": "Provider notification",
         "network_policies": "Network policy", "radius_group_attributes": "RADIUS group"}
# The name each kind is known by (a subscription by its PPPoE login); None falls back to "#id".
_NAME_COLUMNS = {"plans": (Plan.id, Plan.name), "subscriptions": (Subscription.id, Subscription.pppoe_username),
                 "customers": (Customer.id, Customer.name), "invoices": (Invoice.id, Invoice.number),
                 "credit_notes": (CreditNote.id, CreditNote.number), "payments": (Payment.id, Payment.reference),
                 "nas": (Nas.id, Nas.shortname), "users": (User.id, User.name)}

ACTIONS = {
    "customer.create": "Customer created", "customer.update": "Details changed", "customer.close": "Account closed",
    "customer.status": "Status changed",
    "subscription.create": "Subscription added", "subscription.update": "Network details changed",
    "subscription.change_plan": "Plan changed", "subscription.suspend": "Suspended", "subscription.resume": "Resumed",
    "subscription.reactivate": "Reactivated (paid up)", "subscription.cancel": "Cancelled",
    "subscription.approve_catch_up": "Catch-up approved", "subscription.billing_hold": "Held for review",
    "subscription.credentials_set": "PPPoE password set", "subscription.coa_resend": "Network change sent again",
    "invoice.create_draft": "Draft written", "invoice.update_draft": "Draft changed",
    "invoice.delete_draft": "Draft deleted", "invoice.issue": "Invoice issued", "invoice.send": "Invoice emailed",
    "invoice.void": "Invoice voided", "invoice.overdue": "Overdue", "invoice.paid": "Paid", "invoice.open": "Reopened",
    "credit_note.void": "Credit note issued for a void", "credit_note.cancellation": "Credit note issued for a "
    "cancellation", "credit_note.plan_change": "Credit note issued for a plan change",
    "credit_note.manual": "Credit note issued", "credit_note.send": "Credit note emailed",
    "payment.record": "Payment recorded", "payment.reverse": "Payment reversed",
    "notification.retry": "Email queued again",
    "plan.create": "Plan created", "plan.update": "Plan changed", "plan.retire": "Plan retired",
    "plan.reactivate": "Plan offered again", "plan.delete": "Plan deleted",
    "user.create": "Staff user invited", "user.update": "Staff user changed", "user.login": "Signed in",
    "user.unlock": "Unlocked", "user.password_change": "Password changed",
    "token.create": "API token created", "token.revoke": "API token revoked",
    "portal_account.link_sent": "Portal sign-in link sent", "portal_account.login": "Signed in to the portal",
}
LABELS = {"pppoe_username": "PPPoE login", "static_ip": "Static IP", "cpe_mac": "CPE MAC", "tax_id": "Tax ID",
          "tax_rate_bp": "Tax rate", "download_mbps": "Download (Mbps)", "upload_mbps": "Upload (Mbps)",
          "nas": "Router", "ip": "IP address", "email": "Email", "recipient": "Sent to"}
CODE_KEYS = {"status", "kind", "method", "suspension_reason", "role", "channel", "resolution", "outcome"}
CODE_WORDS = {"non_payment": "non-payment", "bank_transfer": "bank transfer", "mobile_money": "mobile money",
              "walled_garden": "walled garden", "readonly": "read-only"}
HIDDEN_KEYS = {"id", "search_text"}  # the record's own id is the entry's subject already
_CODE = re.compile(r"[a-z][a-z_]*")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:\d{2}|Z)?")

Money = Callable[[int], str]


@dataclass(frozen=True)
class Change:
    """One field of an event: its label, and its value before (None: the field was not there) and after."""

    label: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class Entry:
    """One audit event as a person reads it."""

    event: object  # the AuditEvent (or a row with its columns): when, who, and the raw action for the curious
    action: str
    kind: str  # the entity's table, for a link to its page
    entity_id: int | None
    subject: str
    changes: list[Change]
    removed: bool


def humanise(key: str) -> str:
    """A field or code name as words: "billing_day" reads "Billing day"."""
    words = key.replace(".", " ").replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else key


def label_of(key: str) -> str:
    """The label a field goes by: its own word, the record it names, or its name without the unit."""
    if key in LABELS:
        return LABELS[key]
    if key in REFERENCES:
        return humanise(key.removesuffix("_id"))
    for suffix in ("_cents", "_bp"):
        if key.endswith(suffix):
            return humanise(key.removesuffix(suffix))
    return humanise(key)


def percent(bp: int) -> str:
    """Basis points as a percentage: 1600 reads 16%, 750 reads 7.5%."""
    whole, part = divmod(int(bp), 100)
    return f"{whole}.{part:02d}".rstrip("0").rstrip(".") + "%"


def _clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def _when(text: str) -> str | None:
    """An ISO date or timestamp as the pages write it, or None when `text` is neither."""
    try:
        if _ISO_DATE.fullmatch(text):
            return f"{date.fromisoformat(text):%d %b %Y}"
        if _ISO_DATETIME.fullmatch(text):
            return f"{datetime.fromisoformat(text.replace('Z', '+00:00')):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return None
    return None


def show(key: str, value, names: dict, money: Money) -> str:
    """One value of field `key` in words; `names` maps (kind, id) to what the record is called."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, int):
        if key.endswith("_cents"):
            return money(value)
        if key.endswith("_bp"):
            return percent(value)
        if key in REFERENCES:
            return names.get((REFERENCES[key], value)) or f"#{value}"
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, str):
        if key in CODE_KEYS and _CODE.fullmatch(value):
            return humanise(CODE_WORDS.get(value, value))
        return _when(value) or _clip(value)
    if isinstance(value, list):
        return _clip(", ".join(show(key, item, names, money) for item in value)) if value else "—"
    if isinstance(value, dict):
        return _clip("; ".join(f"{label_of(k)}: {show(k, v, names, money)}" for k, v in value.items()))
    return _clip(str(value))


def _references(events: Iterable) -> dict[str, set[int]]:
    wanted: dict[str, set[int]] = {}
    for event in events:
        if event.entity_type in _NAME_COLUMNS and event.entity_id is not None:
            wanted.setdefault(event.entity_type, set()).add(event.entity_id)
        for values in (event.before or {}, event.after or {}):
            for key, value in values.items():
                if key in REFERENCES and isinstance(value, int) and not isinstance(value, bool):
                    wanted.setdefault(REFERENCES[key], set()).add(value)
    return wanted


def _loaded_name(kind: str, row_id: int):
    """The name of a record the page has loaded already (in the session, attribute not expired), else None."""
    id_col, name_col = _NAME_COLUMNS[kind]
    obj = db.session.identity_map.get(identity_key(id_col.class_, row_id))
    if obj is None:
        return None
    loaded = inspect(obj).dict  # only what is loaded: reading an expired attribute would be a query of its own
    return (loaded[name_col.key],) if name_col.key in loaded else None


def _named(kind: str, row_id: int, name: str | None) -> str:
    if kind == "payments":  # a payment is known by its number here, and its reference when it has one
        return f"#{row_id}" + (f" ({name})" if name else "")
    if kind == "invoices" and not name:
        return f"draft #{row_id}"
    return name or f"#{row_id}"


def resolve_names(wanted: dict[str, set[int]]) -> dict[tuple[str, int], str]:
    """Return what each (kind, id) is called: from the records the page loaded already, and the rest in one
    statement, whatever the number of kinds and ids."""
    names, missing = {}, {}
    for kind, ids in wanted.items():
        if kind not in _NAME_COLUMNS:
            continue
        for row_id in ids:
            loaded = _loaded_name(kind, row_id)
            if loaded is None:
                missing.setdefault(kind, set()).add(row_id)
            else:
                names[(kind, row_id)] = _named(kind, row_id, loaded[0])
    selects = [select(literal(kind).label("kind"), id_col.label("id"), cast(name_col, String).label("name"))
               .where(id_col.in_(sorted(ids)))
               for kind, ids in sorted(missing.items())
               for id_col, name_col in [_NAME_COLUMNS[kind]]]
    if selects:
        for kind, row_id, name in db.session.execute(union_all(*selects) if len(selects) > 1 else selects[0]):
            names[(kind, row_id)] = _named(kind, row_id, name)
    return names


def describe_events(events: Iterable, money: Money) -> list[Entry]:
    """Return the events as entries in the staff's words (one query for every name they mention)."""
    events = list(events)
    names = resolve_names(_references(events))
    entries = []
    for event in events:
        before, after = event.before or {}, event.after or {}
        changes = [Change(label_of(key), show(key, before[key], names, money) if key in before else None,
                          show(key, value, names, money))
                   # A new record lists only the fields it sets; a change lists every field it touched.
                   for key, value in after.items()
                   if key not in HIDDEN_KEYS and (value is not None or key in before)]
        kind, entity_id = event.entity_type, event.entity_id
        noun = NOUNS.get(kind, humanise(kind))
        name = names.get((kind, entity_id)) if entity_id is not None else None
        subject = f"{noun} {name}" if name else (f"{noun} #{entity_id}" if entity_id is not None else noun)
        entries.append(Entry(event, ACTIONS.get(event.action) or humanise(event.action.replace(".", ": ", 1)),
                             kind, entity_id, subject, changes, removed=not after and bool(before)))
    return entries


# --- job runs -------------------------------------------------------------------------------------------------

COUNT_LABELS = {"invoices": "Invoices issued", "lines": "Invoice lines", "total_cents": "Invoiced",
                "held_for_review": "Held for review", "failed_customers": "Customers left out",
                "sent": "Emails sent", "retry": "Emails to retry", "failed": "Emails failed",
                "skipped": "Emails skipped", "reactivated": "Reactivated (paid up)", "suspended": "Suspended",
                "marked_overdue": "Marked overdue", "reminders_queued": "Reminders queued",
                "mismatches": "Network mismatches", "coa_failed": "CoA requests failed"}
KIND_WORDS = {"nightly": "Nightly run", "generate_monthly_invoices": "Invoicing", "mark_overdue": "Marking overdue",
              "enforce_overdue": "Suspending for non-payment", "reactivate_paid": "Reactivating the paid-up",
              "send_reminders": "Reminders", "deliver_notifications": "Sending emails"}


def count_words(counts: dict | None, money: Money) -> list[tuple[str, str]]:
    """A run's counts people read, as (label, value): "total_cents: 2000" reads ("Invoiced", "$20.00")."""
    return [(COUNT_LABELS.get(key) or label_of(key), show(key, value, {}, money))
            for key, value in (counts or {}).items() if not key.startswith("_")]


def kind_words(kind: str) -> str:
    """A run's kind in words: "generate_monthly_invoices" reads "Invoicing"."""
    return KIND_WORDS.get(kind) or humanise(kind)

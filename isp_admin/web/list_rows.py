"""The staff lists' table rows (customers, invoices, payments), rendered in one Python pass over a page's rows.

A list page shows 50 rows of about ten values each; through Jinja every value cost an attribute lookup in the
template runtime, an escape and a Markup concatenation, and every checkbox and badge a macro or url_for call: a
third of the page's CPU. Here each value from the database is escaped once (markupsafe.escape, as Jinja's
autoescape does) into fixed markup, each kind of detail link is built once per page, and a badge once per status.
The markup is what the list templates had inline, so the pages look and work as before; the templates call these
as globals (register_template_helpers) where their loop was.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping

from flask import url_for
from markupsafe import Markup, escape

from isp_admin.web.templating import money, status_badge

INVOICE_BADGE_COLOURS = {"draft": "secondary", "open": "primary", "overdue": "danger", "paid": "success",
                         "void": "dark"}


def _link_prefix(endpoint: str, argument: str) -> Markup:
    """The detail URL of `endpoint` without its id: a row's link is this and the id (one url_for per page)."""
    return escape(url_for(endpoint, **{argument: 1})[:-1])  # escaped: SCRIPT_NAME may hold anything


def _select_cell(row_id: int, label: Markup | str) -> str:
    """The bulk checkbox cell of a list row; `label` is escaped already."""
    return (f'<td class="bulk-check"><input class="form-check-input" type="checkbox" name="ids" value="{int(row_id)}" '
            f'aria-label="Select {label}"></td>')


@functools.lru_cache(maxsize=64)
def invoice_badge(status: str) -> Markup:
    """An invoice's status as a badge (the lists and invoices/_badges.html's macro, one markup)."""
    return Markup(f'<span class="badge text-bg-{INVOICE_BADGE_COLOURS.get(status, "light")}">'  # noqa: S704
                  f"{escape(status)}</span>")


@functools.lru_cache(maxsize=64)
def payment_badge(status: str) -> Markup:
    """A payment's status as a badge (the lists and invoices/_badges.html's macro, one markup)."""
    colour = "success" if status == "completed" else "warning"
    return Markup(f'<span class="badge text-bg-{colour}">{escape(status)}</span>')  # noqa: S704


def _customer_cell(row: Mapping, customer: Markup) -> str:
    """An invoice's or payment's customer: the name linked to the customer, then the account number."""
    return (f'<td><a href="{customer}{int(row["customer_id"])}">{escape(row["customer_name"])}</a> '
            f'<span class="small text-body-secondary">{escape(row["account_number"])}</span></td>')


# --- customers ---------------------------------------------------------------------------------------------------

def _service(service: Mapping) -> str:
    """One live subscription: plan name, a badge unless it is active, and its PPPoE login."""
    status, login = service["status"], service["pppoe_username"]
    badge = status_badge(status) if status != "active" else ""
    login_html = f'<span class="text-body-secondary">{escape(login)}</span>' if login else ""
    return f"<div>{escape(service['plan_name'])} {badge} {login_html}</div>"


def _customer_row(c, services: Iterable[Mapping], detail: Markup) -> str:
    name = escape(c.name)
    href = f"{detail}{int(c.id)}"
    email = f"<div>{escape(c.email)}</div>" if c.email else ""
    listed = "".join(_service(s) for s in services) or '<span class="text-body-secondary">none</span>'
    return (f"<tr>{_select_cell(c.id, name)}"
            f'<td><a href="{href}"><code>{escape(c.account_number)}</code></a></td>'
            f'<td><a href="{href}">{name}</a></td>'
            f'<td class="small text-break">{email}<div class="text-body-secondary">{escape(c.phone or "")}</div></td>'
            f'<td class="small">{listed}</td>'
            f"<td>{status_badge(c.status)}</td></tr>\n")


def customer_rows(rows: Iterable, services: Mapping[int, list]) -> Markup:
    """Return the customer list's table rows: checkbox, account and name (linked), contact, services, status."""
    detail = _link_prefix("customers.detail", "customer_id")
    return Markup("".join(_customer_row(c, services.get(c.id, ()), detail) for c in rows))  # noqa: S704


# --- invoices ----------------------------------------------------------------------------------------------------

def _invoice_row(i: Mapping, detail: Markup, customer: Markup) -> str:
    number = escape(i["number"] or f"Draft #{int(i['id'])}")
    label = escape(i["number"] or f"draft #{int(i['id'])}")
    status, currency = i["status"], i["currency"]
    balance = escape(money(i["balance_cents"], currency)) if status not in ("void", "draft") else "—"
    return (f"<tr>{_select_cell(i['id'], label)}"
            f'<td><a href="{detail}{int(i["id"])}"><code>{number}</code></a></td>'
            f"{_customer_cell(i, customer)}"
            f"<td>{invoice_badge(status)}</td>"
            f'<td class="text-nowrap">{escape(i["issue_date"])}</td>'
            f'<td class="text-nowrap">{escape(i["due_date"])}</td>'
            f'<td class="text-end text-nowrap">{escape(money(i["total_cents"], currency))}</td>'
            f'<td class="text-end text-nowrap">{balance}</td></tr>\n')


def invoice_rows(rows: Iterable[Mapping]) -> Markup:
    """Return the invoice list's table rows: checkbox, number, customer, status, dates, total and balance."""
    detail, customer = _link_prefix("invoices.detail", "invoice_id"), _link_prefix("customers.detail", "customer_id")
    return Markup("".join(_invoice_row(i, detail, customer) for i in rows))  # noqa: S704


# --- payments ----------------------------------------------------------------------------------------------------

def _payment_row(p: Mapping, detail: Markup, customer: Markup) -> str:
    payment_id = int(p["id"])
    provider = p["provider"]
    badge = f' <span class="badge text-bg-light border provider-badge">{escape(provider)}</span>' if provider else ""
    return (f"<tr>{_select_cell(payment_id, f'payment #{payment_id}')}"
            f'<td><a href="{detail}{payment_id}">#{payment_id}</a></td>'
            f'<td class="text-nowrap">{escape(p["received_on"])}</td>'
            f"{_customer_cell(p, customer)}"
            f'<td>{escape(p["method"].replace("_", " "))}{badge}</td>'
            f'<td class="small text-break">{escape(p["reference"] or "")}</td>'
            f"<td>{payment_badge(p['status'])}</td>"
            f'<td class="text-end text-nowrap">{escape(money(p["amount_cents"], p["currency"]))}</td></tr>\n')


def payment_rows(rows: Iterable[Mapping]) -> Markup:
    """Return the payment list's table rows: checkbox, number, date, customer, method, reference, status, amount."""
    detail, customer = _link_prefix("payments.detail", "payment_id"), _link_prefix("customers.detail", "customer_id")
    return Markup("".join(_payment_row(p, detail, customer) for p in rows))  # noqa: S704

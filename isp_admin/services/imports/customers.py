"""Importing customers with their subscriptions: the columns (docs/import.md), set-based checks over the whole file,
then each row through the customer and subscription services, as the forms would."""
from __future__ import annotations

import contextlib
import ipaddress
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import func, select

from isp_admin.errors import AppError, Invalid
from isp_admin.extensions import db
from isp_admin.models import Customer, Plan, Subscription
from isp_admin.services.customers import accounts, subscriptions
from isp_admin.services.identity.users import normalise_email
from isp_admin.services.imports.batches import write_rows
from isp_admin.services.imports.reading import Columns, Table
from isp_admin.services.imports.report import Report
from isp_admin.services.imports.values import bounded, chunks, parse_amount, parse_date, whole_number
from isp_admin.services.platform import audit
from isp_admin.services.platform.bounds import check_service_dates

PROFILE = {"name": 200, "email": 254, "phone": 40, "service_address": 2000, "billing_address": 2000, "tax_id": 40,
           "notes": 5000}
SERVICE = ("plan", "pppoe_username", "static_ip", "cpe_mac", "start_date", "billed_from", "billing_day", "price",
           "status")
COLUMNS = Columns(
    names=("account_number", *PROFILE, *SERVICE),
    required=("name",),
    aliases={"account": "account_number", "account_no": "account_number", "full_name": "name",
             "customer_name": "name", "e_mail": "email", "phone_number": "phone", "mobile": "phone",
             "address": "service_address", "plan_code": "plan", "plan_name": "plan", "pppoe": "pppoe_username",
             "pppoe_login": "pppoe_username", "ip": "static_ip", "ip_address": "static_ip", "ipv4": "static_ip",
             "mac": "cpe_mac", "mac_address": "cpe_mac", "bill_day": "billing_day", "price_override": "price"},
)
# A service's field names, as the columns of this file call them.
FIELD_COLUMNS = {"plan_id": "plan", "price_override_cents": "price", "end_date": "status", "reason": "status"}
STATUSES = {"": "active", "active": "active", "suspended": "suspended", "blocked": "suspended"}
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@/-]{0,19}$")
EXAMPLE = [{"account_number": "10023", "name": "Amina Wanjiru", "email": "amina@mail.example",
            "phone": "+254 711 000111", "service_address": "12 Moi Avenue, Nairobi", "plan": "HOME-50",
            "pppoe_username": "amina.w", "static_ip": "", "start_date": "2024-03-15", "billed_from": "2026-07-01",
            "billing_day": "1", "price": "", "status": "active"}]


@dataclass
class Row:
    """One data row, parsed: the customer's profile and, when a plan is named, a subscription."""

    number: int
    account_number: str | None = None
    profile: dict = field(default_factory=dict)
    service: dict | None = None
    billed_from: date | None = None
    suspended: bool = False
    failed: bool = False


def _parse(number: int, cells: dict, options: dict, plans: dict, report: Report) -> Row:
    row = Row(number)

    def fail(column: str, message: str) -> None:
        row.failed = True
        report.error(number, column, message)

    for name, limit in PROFILE.items():
        try:
            row.profile[name] = bounded(cells.get(name, ""), limit)
        except ValueError as exc:
            fail(name, str(exc))
    if row.profile.get("email"):
        try:  # here too, so a row refused for another cell has its address checked as well
            normalise_email(row.profile["email"])
        except AppError as exc:
            report.refused(number, exc, FIELD_COLUMNS)
            row.failed = True
    account = cells.get("account_number", "")
    if account and not _ACCOUNT.match(account):
        fail("account_number", "Letters, digits and . _ @ / - only, at most 20, starting with a letter or digit.")
    row.account_number = account or None
    status = cells.get("status", "").lower()
    if status not in STATUSES:
        fail("status", "active or suspended (blocked reads as suspended); leave it empty for active.")
    row.suspended = STATUSES.get(status) == "suspended"
    if not cells.get("plan"):
        if any(cells.get(name) for name in SERVICE if name != "status"):
            fail("plan", "Name the plan (its code or name) for this row's subscription.")
        elif row.suspended:
            fail("status", "Only a subscription can be suspended; this row names no plan.")
        return row
    row.service = _parse_service(cells, options, plans, fail)
    return row


def _parse_service(cells: dict, options: dict, plans: dict, fail) -> dict:
    service = {"plan_id": None, "start_date": None, "billing_day": None, "price_override_cents": None,
               "pppoe_username": cells.get("pppoe_username") or None, "static_ip": cells.get("static_ip") or None,
               "cpe_mac": cells.get("cpe_mac") or None}
    plan = plans.get(cells["plan"].lower())
    if plan is None:
        fail("plan", f"No plan with the code or name “{cells['plan'][:60]}”.")
    elif plan == "ambiguous":
        fail("plan", "Several plans have this name; give the plan's code.")
    elif not plan.active:
        fail("plan", f"The plan {plan.code} is retired; choose an active plan.")
    else:
        service["plan_id"] = plan.id
    for column in ("start_date", "billed_from"):
        if cells.get(column):
            try:
                service[column] = parse_date(cells[column], options["date_format"])
            except ValueError as exc:
                fail(column, str(exc))
    if not cells.get("start_date"):
        fail("start_date", "The date the service started (required with a plan).")
    if cells.get("billing_day"):
        try:
            service["billing_day"] = whole_number(cells["billing_day"], 1, 31)
        except ValueError as exc:
            fail("billing_day", str(exc))
    if cells.get("price"):
        try:
            service["price_override_cents"] = parse_amount(cells["price"], options["decimal_comma"])
        except ValueError as exc:
            fail("price", str(exc))
    if service["static_ip"]:
        with contextlib.suppress(ValueError):  # an invalid one: the subscription service words the error
            service["static_ip"] = str(ipaddress.ip_address(service["static_ip"]))
    return service


def _plans() -> dict:
    """Every plan by lower-cased code and name (a name two plans share is 'ambiguous'): one query."""
    plans = list(db.session.scalars(select(Plan)))
    found: dict = {}
    for plan in plans:
        key = plan.name.lower()
        found[key] = "ambiguous" if key in found else plan
    for plan in plans:
        found[plan.code.lower()] = plan  # a code wins over a name
    return found


def _check_file(rows: list[Row], report: Report) -> None:
    """The checks that need the whole file (and the database) at once, each in one query per thousand values."""
    first_of_account: dict[str, Row] = {}
    for row in rows:
        if row.account_number:
            first = first_of_account.setdefault(row.account_number, row)
            if first is not row:
                _same_customer(row, first, report)
    taken = set()
    for chunk in chunks(list(first_of_account)):
        taken.update(db.session.scalars(select(Customer.account_number).where(Customer.account_number.in_(chunk))))
    for row in rows:
        if row.account_number in taken:
            row.failed = True
            report.error(row.number, "account_number", f"A customer with account number {row.account_number} "
                                                       "already exists.")
    for column, key in (("pppoe_username", str.lower), ("static_ip", str)):
        _unique_in_file_and_live(rows, column, key, report)


def _same_customer(row: Row, first: Row, report: Report) -> None:
    for name, value in row.profile.items():
        if value is not None and value != first.profile.get(name):
            row.failed = True
            report.error(row.number, name, f"Differs from row {first.number}, which has the same account number "
                                           "(leave it empty, or the same, on the customer's further rows).")


def _unique_in_file_and_live(rows: list[Row], column: str, key, report: Report) -> None:
    seen: dict[str, int] = {}
    for row in rows:
        value = row.service and row.service.get(column)
        if not value:
            continue
        if key(value) in seen:
            row.failed = True
            report.error(row.number, column, f"Also on row {seen[key(value)]}: each live subscription has its own.")
        else:
            seen[key(value)] = row.number
    live_column = getattr(Subscription, column)
    compared = func.lower(live_column) if key is str.lower else live_column
    used = set()
    for chunk in chunks(list(seen)):
        used.update(key(v) for v in db.session.scalars(
            select(live_column).where(compared.in_(chunk), Subscription.status != "cancelled")))
    for row in rows:
        value = row.service and row.service.get(column)
        if value and key(value) in used:
            row.failed = True
            report.error(row.number, column, f"{value} is already used by a live subscription.")


def run(table: Table, options: dict, today: date, report: Report) -> None:
    """Check (and write, in the caller's transaction) every row; errors and counts go to `report`."""
    plans = _plans()
    rows = [_parse(number, cells, options, plans, report) for number, cells in table.rows]
    _check_file(rows, report)
    customers: dict[str, int | None] = {}  # account number -> the customer its first row created (None: failed)

    def write(row: Row) -> None:
        customer_id = customers.get(row.account_number) if row.account_number else None
        if row.account_number in customers and customer_id is None:
            raise Invalid("The customer on an earlier row with this account number has errors.",
                          {"account_number": "See its first row."})
        if customer_id is None:
            customer_id = accounts.create_customer(account_number=row.account_number, **row.profile).id
            report.count("customers")
        if row.service:
            _subscribe(row, customer_id, today, report)
        if row.account_number:
            customers[row.account_number] = customer_id  # once the whole row passed: a failure undoes it all

    def failed(row: Row) -> None:
        if row.account_number:
            customers.setdefault(row.account_number, None)

    write_rows([row for row in rows if not row.failed], write, report, FIELD_COLUMNS, state=(customers,),
               failed=failed)


def _subscribe(row: Row, customer_id: int, today: date, report: Report) -> None:
    service = dict(row.service)
    billed_from = service.pop("billed_from", None)
    if service["billing_day"] is None and billed_from is not None:
        service["billing_day"] = billed_from.day  # the old system's bill date
    sub = subscriptions.add_subscription(customer_id, **service)
    report.count("subscriptions")
    if billed_from is not None and billed_from != sub.start_date:
        _bill_from(sub, billed_from, today)
    elif sub.start_date < today - timedelta(days=31):
        report.notice(row.number, "billed_from", f"The next billing run bills this subscription from its start "
                                                 f"date ({sub.start_date}): about {(today - sub.start_date).days // 30}"
                                                 " periods. Give billed_from if the old system billed them.")
    if row.suspended:
        subscriptions.suspend(sub.id, "manual")
        report.count("suspended")


def _bill_from(sub: Subscription, day: date, today: date) -> None:
    """Start billing a brought-over subscription on `day`: the old system billed the periods before it."""
    check_service_dates(today, billed_from=day)
    if day < sub.start_date:
        raise Invalid("Billing cannot start before the service.", {"billed_from": "On or after the start date."})
    before = {"next_bill_date": sub.next_bill_date.isoformat(), "billed_from": None}
    # Coverage (services/billing/coverage.py) starts at billed_from, so the periods billed elsewhere are no gap.
    sub.next_bill_date = sub.billed_from = day
    db.session.flush()
    audit.record("subscription.update", sub, before=before,
                 after={"next_bill_date": day.isoformat(), "billed_from": day.isoformat()},
                 customer_id=sub.customer_id)

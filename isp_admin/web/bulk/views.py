"""Bulk actions on the staff lists: tick rows (or all that match the filter), see what would happen, confirm.

The rows are chosen again on the server every time, from the list's filter as posted: "all matching" is the
filter re-run now, and ticked ids count only when they still match it. A selection up to BULK_INLINE_LIMIT rows
runs in the request; a larger one becomes a job run (jobs/bulk.py), followed on its page. Export selected
downloads the chosen rows as the list's CSV.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from werkzeug.datastructures import MultiDict

from isp_admin.jobs.bulk import start_bulk_run
from isp_admin.services.billing import listing as billing_listing
from isp_admin.services.billing.bulk_actions import ACTIONS as INVOICE_ACTIONS
from isp_admin.services.customers import listing as customer_listing
from isp_admin.services.customers.bulk_actions import ACTIONS as CUSTOMER_ACTIONS
from isp_admin.services.platform import bulk_actions
from isp_admin.services.platform.audit import current_actor
from isp_admin.services.platform.clock import today
from isp_admin.services.platform.pagination import COUNT_CAP
from isp_admin.web.access import access
from isp_admin.web.customers.list_form import CustomerListForm
from isp_admin.web.invoices.list_form import InvoiceListForm
from isp_admin.web.lists import csv_download
from isp_admin.web.payments.list_form import PaymentListForm
from isp_admin.web.unit_of_work import REFUSED, perform

bp = Blueprint("bulk", __name__, url_prefix="/bulk")
MAX_ROWS = COUNT_CAP  # one bulk action touches at most this many rows: a larger selection is narrowed first
INLINE_LIMIT = 200  # rows done in the request; more run in the background (BULK_INLINE_LIMIT overrides)
MAX_FILTER_LENGTH = 2000
ROW_ID = re.compile(r"[1-9][0-9]{0,17}")  # below 2^63, the ids' column type


@dataclass(frozen=True)
class BulkList:
    """A list that bulk actions and Export selected work on: its filter form, rows, CSV and actions."""

    name: str
    index: str
    noun: str
    form: type[FlaskForm]
    ids: Callable[[dict, list[int] | None, int], list[int]]
    csv_rows: Callable[[dict, str, list[int] | None], Iterator[list]]
    header: list[str]
    actions: dict[str, bulk_actions.BulkAction]


LISTS = {
    "customers": BulkList(
        "customers", "customers.index", "customer", CustomerListForm,
        lambda filters, only, limit: customer_listing.customer_ids(**filters, only=only, limit=limit),
        lambda filters, sort, only: customer_listing.customer_csv_rows(**filters, sort=sort, only=only),
        customer_listing.CUSTOMER_CSV_HEADER, CUSTOMER_ACTIONS),
    "invoices": BulkList(
        "invoices", "invoices.index", "invoice", InvoiceListForm,
        lambda filters, only, limit: billing_listing.invoice_ids(filters, today(), only=only, limit=limit),
        lambda filters, sort, only: billing_listing.invoice_csv_rows(filters, today(), sort=sort, only=only),
        billing_listing.INVOICE_CSV_HEADER, INVOICE_ACTIONS),
    "payments": BulkList(
        "payments", "payments.index", "payment", PaymentListForm,
        lambda filters, only, limit: billing_listing.payment_ids(filters, only=only, limit=limit),
        lambda filters, sort, only: billing_listing.payment_csv_rows(filters, sort=sort, only=only),
        billing_listing.PAYMENT_CSV_HEADER, {}),
}


class Refused(Exception):
    """A selection that cannot be acted on: said to the user on the list it came from."""


@dataclass(frozen=True)
class Selection:
    """What the user chose on a list: its filter (as posted and as read), all that match or the ticked ids."""

    listing: BulkList
    query: str
    filters: dict
    sort: str
    all_matching: bool
    ticked: list[int]

    def back(self) -> str:
        """The list as it was, filters and sort kept."""
        return url_for(self.listing.index) + (f"?{self.query}" if self.query else "")


def _selection(listing: BulkList) -> Selection:
    """Read the posted selection and the list's filter, or refuse it."""
    if not FlaskForm().validate_on_submit():
        raise Refused("The form expired; please choose the rows again.")
    posted = request.form.get("filter", "")
    if len(posted) > MAX_FILTER_LENGTH:
        raise Refused("The list's filter is too long.")
    try:
        pairs = parse_qsl(posted, max_num_fields=40)
    except ValueError:
        raise Refused("The list's filter is not valid.") from None
    form = listing.form(MultiDict(pairs))
    query = urlencode(pairs)
    if not form.validate():
        raise Refused("The list's filter is not valid; choose the rows again.")
    raw = request.form.getlist("ids")
    if len(raw) > MAX_ROWS or not all(ROW_ID.fullmatch(value) for value in raw):
        raise Refused("The selection is not valid; choose the rows again.")
    all_matching = request.form.get("all") == "1"
    ticked = sorted({int(value) for value in raw})
    if not all_matching and not ticked:
        raise Refused("Tick the rows to act on, or select all that match the filter.")
    return Selection(listing, query, form.filters(), form.chosen_sort(), all_matching, ticked)


def _rows(selection: Selection) -> list[int]:
    """The ids chosen, re-read from the filter now (ticked ids count only while they match it)."""
    ids = selection.listing.ids(selection.filters, None if selection.all_matching else selection.ticked, MAX_ROWS + 1)
    if len(ids) > MAX_ROWS:
        raise Refused(f"More than {MAX_ROWS:,} {selection.listing.noun}s match: narrow the filter first.")
    if not ids:
        raise Refused(f"None of the chosen {selection.listing.noun}s matches the list's filter any more.")
    return ids


def _action(listing: BulkList) -> bulk_actions.BulkAction:
    action = listing.actions.get(request.form.get("action", ""))
    if action is None:
        raise Refused("Choose one of the actions.")
    return action


def _inline_limit() -> int:
    return int(current_app.config.get("BULK_INLINE_LIMIT", INLINE_LIMIT))


def _preview(name: str):
    listing = LISTS[name]
    try:
        selection = _selection(listing)
        action = _action(listing)
        ids = _rows(selection)
    except Refused as refusal:
        flash(str(refusal), "warning")
        return redirect(_back(listing))
    return render_template("bulk/preview.html", listing=listing, action=action, selection=selection, count=len(ids),
                           preview=bulk_actions.preview(action, ids, today()), inline=len(ids) <= _inline_limit(),
                           apply_url=url_for(f"bulk.{name}_apply"))


def _apply(name: str):
    listing = LISTS[name]
    try:
        selection = _selection(listing)
        action = _action(listing)
        ids = _rows(selection)
    except Refused as refusal:
        flash(str(refusal), "warning")
        return redirect(_back(listing))
    if len(ids) > _inline_limit():
        run = perform(start_bulk_run, action.name, ids, current_actor(), today(),
                      failure=f"{action.label} could not be started: {{}}")
        if run is REFUSED:
            return redirect(selection.back())
        flash(f"{action.label}: {len(ids):,} {listing.noun}s are being done in the background.", "success")
        return redirect(url_for("billing.job", job_run_id=run.id))
    result = perform(bulk_actions.apply, action, ids, today())
    if result is REFUSED:
        return redirect(selection.back())
    return render_template("bulk/result.html", listing=listing, action=action, selection=selection,
                           count=len(ids), result=result)


def _back(listing: BulkList) -> str:
    """The list the refused form came from (its filter kept, when it could be read)."""
    try:
        pairs = parse_qsl(request.form.get("filter", "")[:MAX_FILTER_LENGTH], max_num_fields=40)
    except ValueError:
        pairs = []
    return url_for(listing.index) + (f"?{urlencode(pairs)}" if pairs else "")


@bp.post("/invoices/preview")
@access("billing.edit")
def invoices_preview():
    """Show what a bulk action would do to the chosen invoices, and ask to confirm."""
    return _preview("invoices")


@bp.post("/invoices/apply")
@access("billing.edit")
def invoices_apply():
    """Send the chosen invoices or their reminders (in the background for a large selection)."""
    return _apply("invoices")


@bp.post("/customers/preview")
@access("subscriptions.edit")
def customers_preview():
    """Show what a bulk action would do to the chosen customers' service, and ask to confirm."""
    return _preview("customers")


@bp.post("/customers/apply")
@access("subscriptions.edit")
def customers_apply():
    """Suspend or resume the chosen customers' service (in the background for a large selection)."""
    return _apply("customers")


@bp.post("/<any(customers, invoices, payments):list_name>/export")
@access("view")
def export(list_name: str):
    """Download the chosen rows (or all that match the filter) as the list's CSV."""
    listing = LISTS[list_name]
    try:
        selection = _selection(listing)
        only = None if selection.all_matching else _rows(selection)
    except Refused as refusal:
        flash(str(refusal), "warning")
        return redirect(_back(listing))
    return csv_download(f"{listing.name}-selected", listing.header,
                        listing.csv_rows(selection.filters, selection.sort, only))

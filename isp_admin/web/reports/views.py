"""Reports: AR aging, invoiced vs collected, MRR by plan, top debtors; charts and CSV."""
from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterable, Iterator
from datetime import date

from flask import Blueprint, Response, abort, current_app, render_template, request, stream_with_context

from isp_admin.services.billing.money import cents_to_input
from isp_admin.services.platform.clock import today
from isp_admin.services.reporting import reports
from isp_admin.web.access import access
from isp_admin.web.reports.forms import AsOfForm, MonthRangeForm

bp = Blueprint("reports", __name__, url_prefix="/reports")

BUCKET_LABELS = [label for _key, label, _oldest, _newest in reports.BUCKETS]
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CSV_CHUNK = 16 * 1024  # characters written to the client at a time by a streamed CSV


def safe_text(value) -> str:
    """Return text for a CSV cell, an apostrophe first when a spreadsheet would read it as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def amount(cents: int) -> str:
    """Return cents as a plain decimal string ('1234.50'), computed on integers."""
    return cents_to_input(cents)


def csv_response(filename: str, header: list[str], rows: list[list[str]]) -> Response:
    """Return rows as a CSV attachment."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    response = Response(out.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def csv_stream_response(filename: str, header: list[str], rows: Iterable[list[str]]) -> Response:
    """Return rows as a CSV attachment written while they are read (no whole file in memory)."""
    def lines() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        for row in itertools.chain([header], rows):
            writer.writerow(row)
            if out.tell() >= CSV_CHUNK:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()

    response = Response(stream_with_context(lines()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def chart(kind: str, labels: list[str], series: dict[str, list[int]]) -> dict:
    """Describe a chart for static/js/reports.js (amounts in cents)."""
    return {"type": kind, "labels": labels, "currency": current_app.config["CURRENCY"],
            "series": [{"label": label, "cents": values} for label, values in series.items()]}


def wants_csv() -> bool:
    """Whether the request asks for CSV (?format=csv); an unknown format is a 400."""
    fmt = request.args.get("format", "html")
    if fmt not in ("html", "csv"):
        abort(400, "Unknown format: use format=csv, or none for the page.")
    return fmt == "csv"


@bp.get("/")
@access("view")
def index():
    """List the reports."""
    return render_template("reports/index.html")


@bp.get("/aging")
@access("view")
def aging():
    """Show open balances by days past due, in total and for the customers owing most (?format=csv too)."""
    as_csv = wants_csv()
    form = AsOfForm(request.args)
    if not form.validate():
        if as_csv:
            abort(400, "The date is not valid.")
        return render_template("reports/aging.html", form=form, report=None), 400
    if as_csv:
        return aging_csv(form.resolved())
    report = reports.ar_aging(form.resolved())
    return render_template("reports/aging.html", form=form, report=report, bucket_labels=BUCKET_LABELS,
                           chart=chart("bar", BUCKET_LABELS, {"Open balance": list(report.totals)}))


def aging_csv(as_of: date) -> Response:
    """The AR aging report as CSV: every customer with an open balance, streamed, then the sum of those rows."""
    width = len(reports.BUCKETS)

    def rows() -> Iterator[list[str]]:
        # The Total is added up from the very rows written, so it always equals their sum.
        totals, total = [0] * width, 0
        for r in reports.aging_rows(as_of):
            totals = [t + cents for t, cents in zip(totals, r.amounts, strict=True)]
            total += r.total_cents
            yield [safe_text(r.account_number), safe_text(r.name), *map(amount, r.amounts), amount(r.total_cents)]
        yield ["", "Total", *map(amount, totals), amount(total)]

    return csv_stream_response(f"ar-aging-{as_of}.csv",
                               ["account_number", "customer", *(key for key, *_ in reports.BUCKETS), "total"], rows())


@bp.get("/invoiced-collected")
@access("view")
def invoiced_collected():
    """Show what was invoiced and what was collected, month by month (?format=csv too)."""
    as_csv = wants_csv()
    form = MonthRangeForm(request.args)
    if not form.validate():
        if as_csv:
            abort(400, "The range of months is not valid.")
        return render_template("reports/invoiced_collected.html", form=form, report=None), 400
    report = reports.invoiced_vs_collected(*form.resolved())
    if as_csv:
        return invoiced_collected_csv(report)
    labels = [f"{m.month:%b %Y}" for m in report.months]
    return render_template(
        "reports/invoiced_collected.html", form=form, report=report,
        chart=chart("bar", labels, {"Invoiced": [m.invoiced_cents for m in report.months],
                                    "Collected": [m.collected_cents for m in report.months]}))


def invoiced_collected_csv(report: reports.InvoicedCollectedReport) -> Response:
    """Invoiced vs collected as CSV, one row per month and a total."""
    rows = [[f"{m.month:%Y-%m}", amount(m.invoiced_cents), amount(m.collected_cents), amount(m.difference_cents)]
            for m in report.months]
    rows.append(["Total", amount(report.invoiced_cents), amount(report.collected_cents),
                 amount(report.invoiced_cents - report.collected_cents)])
    return csv_response(f"invoiced-vs-collected-{report.start:%Y-%m}-to-{report.end:%Y-%m}.csv",
                        ["month", "invoiced", "collected", "difference"], rows)


@bp.get("/mrr")
@access("view")
def mrr():
    """Show monthly recurring revenue per plan (?format=csv too)."""
    as_csv = wants_csv()
    report = reports.mrr_by_plan()
    if as_csv:
        rows = [[safe_text(p.code), safe_text(p.name), str(p.subscriptions), amount(p.mrr_cents)]
                for p in report.plans]
        rows.append(["", "Total", str(report.subscriptions), amount(report.mrr_cents)])
        return csv_response(f"mrr-by-plan-{today()}.csv", ["plan_code", "plan", "active_subscriptions", "mrr"], rows)
    return render_template("reports/mrr.html", report=report, today=today(),
                           chart=chart("doughnut", [p.name for p in report.plans],
                                       {"MRR": [p.mrr_cents for p in report.plans]}))


@bp.get("/debtors")
@access("view")
def debtors():
    """Show the customers with the largest overdue balances (?format=csv too)."""
    as_csv = wants_csv()
    form = AsOfForm(request.args)
    if not form.validate():
        if as_csv:
            abort(400, "The date is not valid.")
        return render_template("reports/debtors.html", form=form, report=None), 400
    report = reports.top_debtors(form.resolved())
    if not as_csv:
        return render_template("reports/debtors.html", form=form, report=report)
    rows = [[safe_text(d.account_number), safe_text(d.name), d.status, amount(d.overdue_cents),
             amount(d.owed_cents), d.oldest_due.isoformat(), str(d.days_overdue), str(d.overdue_invoices)]
            for d in report.debtors]
    return csv_response(f"top-debtors-{report.as_of}.csv",
                        ["account_number", "customer", "status", "overdue", "total_owed", "oldest_due_date",
                         "days_overdue", "overdue_invoices"], rows)

"""`flask perf test-api-performance`: time the main API endpoints, in-process or against a running server.

Latency is measured by the caller around each request; the query count and database time come from the
server's Server-Timing header (isp_admin.observability.timing), so both modes report the same figures.
"""
from __future__ import annotations

import http.client
import json
import logging
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from math import ceil
from urllib.parse import quote, urlsplit

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import select

from isp_admin.cli.unit import command_action
from isp_admin.extensions import db
from isp_admin.models import User
from isp_admin.models.base import utcnow
from isp_admin.services.identity import tokens as token_service
from isp_admin.services.identity import users as user_service

perf_cli = AppGroup("perf", help="Measure the API's latency and queries per request.")

SERVER_TIMING = re.compile(r'app;dur=([\d.]+), db;dur=([\d.]+);desc="(\d+) queries"')
MAX_RETRY_AFTER = 60  # seconds; a longer wait means the server's limit is far below what a benchmark needs


@dataclass
class Reply:
    """One answer: status, latency seen by the caller, the server's own timing, and the JSON body."""

    status: int
    ms: float
    server: tuple[float, float, int] | None = None  # (app ms, db ms, queries) from Server-Timing
    body: dict | None = None
    retry_after: str | None = None


@dataclass
class Result:
    """The measurements of one endpoint."""

    name: str
    path: str | None
    skipped: str | None = None
    latencies: list[float] = field(default_factory=list)
    server: list[tuple[float, float, int]] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: int = 0
    throttled: int = 0

    def summary(self) -> dict:
        """Return the figures the table and --json show."""
        queries = [q for _, _, q in self.server]
        return {
            "endpoint": self.name, "path": self.path, "skipped": self.skipped, "requests": len(self.latencies),
            "errors": self.errors, "throttled": self.throttled,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50_ms": _percentile(self.latencies, 50), "p95_ms": _percentile(self.latencies, 95),
            "max_ms": round(max(self.latencies), 2) if self.latencies else None,
            "app_p50_ms": _percentile([a for a, _, _ in self.server], 50),
            "db_p50_ms": _percentile([d for _, d, _ in self.server], 50),
            "queries_median": float(statistics.median(queries)) if queries else None,
            "queries_max": max(queries) if queries else None,
        }


def _percentile(values: list[float], pct: int) -> float | None:
    """Nearest-rank percentile: a value that was actually observed."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, ceil(pct / 100 * len(ordered)) - 1)], 2)


def _server_timing(header: str | None) -> tuple[float, float, int] | None:
    match = SERVER_TIMING.search(header or "")
    return (float(match[1]), float(match[2]), int(match[3])) if match else None


def _json(raw: bytes) -> dict | None:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def in_process_getter(app, secret: str) -> Callable[[str], Reply]:
    """Return a GET function that runs requests through the Flask test client, each in its own app context."""
    client = app.test_client()
    headers = {"Authorization": f"Bearer {secret}"}

    def get(path: str) -> Reply:
        # A fresh app context per request, as in production: its own flask.g and database session.
        with app.app_context():
            started = time.perf_counter()
            response = client.get(path, headers=headers)
            ms = (time.perf_counter() - started) * 1000
        return Reply(response.status_code, ms, _server_timing(response.headers.get("Server-Timing")),
                     _json(response.get_data()), response.headers.get("Retry-After"))

    return get


def url_getter(base_url: str, secret: str) -> Callable[[str], Reply]:
    """Return a GET function that talks HTTP to a running server over one kept-alive connection."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter("Give a URL like http://127.0.0.1:8000.", param_hint="--url")
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname, parts.port, timeout=30)
    prefix = parts.path.rstrip("/")
    headers = {"Authorization": f"Bearer {secret}", "Accept": "application/json"}

    def get(path: str) -> Reply:
        started = time.perf_counter()
        try:
            connection.request("GET", prefix + path, headers=headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()  # the next request reconnects
            # 599: no HTTP answer at all (counted as an error, like any status outside 2xx).
            return Reply(599, (time.perf_counter() - started) * 1000, body={"message": f"no answer ({exc!r})"})
        ms = (time.perf_counter() - started) * 1000
        return Reply(response.status, ms, _server_timing(response.getheader("Server-Timing")), _json(raw),
                     response.getheader("Retry-After"))

    return get


def _first(get, path: str) -> tuple[dict | None, dict]:
    """Return the first row of a list and its pagination block; stop the run if the list itself fails."""
    reply = _fetch(get, path, None)
    if reply.status != 200 or not reply.body:
        message = (reply.body or {}).get("message", "no JSON body")
        raise click.ClickException(f"GET {path} answered {reply.status}: {message}")
    rows = reply.body.get("data") or []
    return (rows[0] if rows else None), reply.body.get("pagination") or {}


def plan_endpoints(get, page_size: int) -> list[Result]:
    """Read the lists once to find ids, a deep page, a cursor and filters; return what to measure."""
    size = f"page_size={page_size}"
    customer, customers = _first(get, f"/api/customers/?{size}")
    invoice, _ = _first(get, f"/api/billing/invoices/?{size}")
    payment, _ = _first(get, f"/api/billing/payments/?{size}")
    pages = customers.get("pages") or 1
    term = _search_term(customer)
    invoice_filter = None
    if invoice:
        due = date.fromisoformat(invoice["due_date"])
        invoice_filter = (f"/api/billing/invoices/?{size}&status={invoice['status']}"
                          f"&due_from={due - timedelta(days=30)}&due_to={due + timedelta(days=30)}")

    def row(name: str, path: str | None, why: str) -> Result:
        return Result(name, path, None if path else why)

    return [
        row("customers: page 1", f"/api/customers/?{size}", ""),
        row("customers: deep page", f"/api/customers/?{size}&page={pages}" if pages > 1 else None,
            "only one page of customers"),
        row("customers: search", f"/api/customers/?{size}&search={quote(term)}" if term else None, "no customers"),
        row("customers: cursor", customers.get("next_cursor"), "only one page of customers"),
        row("customer detail", f"/api/customers/{customer['id']}/" if customer else None, "no customers"),
        row("invoices: page 1", f"/api/billing/invoices/?{size}", ""),
        row("invoices: status + due", invoice_filter, "no invoices"),
        row("invoice detail", f"/api/billing/invoices/{invoice['id']}/" if invoice else None, "no invoices"),
        row("payments: page 1", f"/api/billing/payments/?{size}", ""),
        row("payment detail", f"/api/billing/payments/{payment['id']}/" if payment else None, "no payments"),
        row("stats: invoices", "/api/billing/stats/invoices/", ""),
        row("stats: payments", "/api/billing/stats/payments/", ""),
        row("plans: list", "/api/plans/", ""),
        row("subscriptions: page 1", f"/api/subscriptions/?{size}", ""),
    ]


def _search_term(customer: dict | None) -> str | None:
    """A word of a real customer's name (so the search finds something), else its account number."""
    if not customer:
        return None
    words = [w for w in customer["name"].split() if len(w) >= 3]
    return words[0] if words else customer["account_number"]


def measure(get, result: Result, count: int, warmup: int) -> None:
    """Send `warmup` unmeasured requests, then `count` measured ones; honour 429 Retry-After by waiting."""
    for _ in range(warmup):
        _fetch(get, result.path, None)
    for _ in range(count):
        reply = _fetch(get, result.path, result)
        result.statuses[reply.status] += 1
        result.latencies.append(reply.ms)
        if reply.server:
            result.server.append(reply.server)
        if not 200 <= reply.status < 300:
            result.errors += 1


def _fetch(get, path: str, result: Result | None) -> Reply:
    reply = get(path)
    while reply.status == 429 and reply.retry_after and reply.retry_after.isdigit():
        if int(reply.retry_after) > MAX_RETRY_AFTER:
            break
        if result is not None:
            result.throttled += 1
        time.sleep(int(reply.retry_after) or 1)  # the server asked for this wait: a rate limit, not a race
        reply = get(path)
    return reply


def _table(summaries: list[dict]) -> str:
    columns = [("endpoint", 24, "endpoint"), ("reqs", 5, "requests"), ("errors", 6, "errors"),
               ("p50 ms", 8, "p50_ms"), ("p95 ms", 8, "p95_ms"), ("max ms", 8, "max_ms"),
               ("app p50", 8, "app_p50_ms"), ("db p50", 7, "db_p50_ms"), ("SQL med", 7, "queries_median"),
               ("SQL max", 7, "queries_max")]
    lines = ["  ".join(f"{title:<{width}}" if i == 0 else f"{title:>{width}}"
                       for i, (title, width, _) in enumerate(columns))]
    for row in summaries:
        if row["skipped"]:
            lines.append(f"{row['endpoint']:<24}  skipped: {row['skipped']}")
            continue
        cells = [_cell(row[key]) for _, _, key in columns]
        lines.append("  ".join(f"{cell:<{width}}" if i == 0 else f"{cell:>{width}}"
                               for i, (cell, (_, width, _)) in enumerate(zip(cells, columns, strict=True))))
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _token_owner(email: str | None) -> User:
    if email:
        user = user_service.find_by_email(email)
    else:
        user = db.session.scalar(select(User).where(User.role == "admin", User.active).order_by(User.id))
    if user is None or not user.active or user.role != "admin":
        raise click.ClickException("The in-process run needs an active admin (create one with "
                                   "`flask users create`, or name one with --email).")
    return user


@perf_cli.command("test-api-performance")
@click.option("--url", default=None, help="A running server, e.g. http://127.0.0.1:8000 (default: in-process).")
@click.option("--token", default=None, help="With --url: a read-scope API token.")
@click.option("--email", default=None, help="In-process: the admin who owns the throwaway token "
                                            "(default: the first active admin).")
@click.option("--requests", "count", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="Measured requests per endpoint.")
@click.option("--warmup", type=click.IntRange(0, 10_000), default=5, show_default=True,
              help="Unmeasured requests per endpoint first.")
@click.option("--page-size", type=click.IntRange(1, 200), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def test_api_performance(url, token, email, count, warmup, page_size, as_json) -> None:
    """Time the main API endpoints; exit 1 if any request fails."""
    if url and not token:
        raise click.UsageError("--url needs --token (a read-scope API token).")
    if url:
        results = _run(url_getter(url, token), count, warmup, page_size)
    else:
        results = _run_in_process(email, count, warmup, page_size)
    summaries = [result.summary() for result in results]
    failed = sum(row["errors"] for row in summaries)
    if as_json:
        click.echo(json.dumps({"mode": url or "in-process", "requests": count, "warmup": warmup,
                               "page_size": page_size, "endpoints": summaries}, indent=2))
    else:
        click.echo(f"{url or 'in-process'}: {count} requests per endpoint after {warmup} warm-up; "
                   "latency seen by the caller, app/db time and SQL queries from Server-Timing")
        click.echo(_table(summaries))
        throttled = sum(row["throttled"] for row in summaries)
        if throttled:
            click.echo(f"{throttled} requests were refused with 429 and retried after Retry-After; "
                       "the waits are not in the latencies.")
    if failed:
        click.echo(f"{failed} requests failed.", err=True)
        raise click.exceptions.Exit(1)


def _run(get, count: int, warmup: int, page_size: int) -> list[Result]:
    results = plan_endpoints(get, page_size)
    for result in results:
        if not result.skipped:
            measure(get, result, count, warmup)
    return results


def _run_in_process(email: str | None, count: int, warmup: int, page_size: int) -> list[Result]:
    app = current_app._get_current_object()
    with command_action():
        token, secret = token_service.create_token(_token_owner(email).id, "flask perf test-api-performance",
                                                   "read", utcnow() + timedelta(hours=1))
    token_id = token.id
    # The run's one token would spend its per-minute budget in seconds: lift the ceiling (the limiter still
    # runs, so its cost is measured) for this process only, and put it back afterwards.
    ceiling = app.config["RATE_LIMIT_AUTHENTICATED"]
    app.config["RATE_LIMIT_AUTHENTICATED"] = "1000000/minute"
    # One access-log line per timed request would bury the table (and time the logging); warnings still show.
    request_log = logging.getLogger("isp_admin.request")
    level = request_log.level
    request_log.setLevel(logging.WARNING)
    try:
        return _run(in_process_getter(app, secret), count, warmup, page_size)
    finally:
        request_log.setLevel(level)
        app.config["RATE_LIMIT_AUTHENTICATED"] = ceiling
        with command_action():
            token_service.revoke_token(token_id, None)

"""Prometheus metrics at /metrics: requests, latency, SQL per request, pool use, jobs, business gauges, host.

Request metrics are prometheus_client objects made once per process; with PROMETHEUS_MULTIPROC_DIR set (gunicorn,
deploy/gunicorn.conf.py) every worker writes them to files that each scrape merges, so the figures are the
server's, not one worker's. Job, business and host figures are read at scrape time (jobs and money from the
database, which every process and pod shares; cached briefly so a scrape every 15 s costs ~nothing).
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from isp_admin.access import PUBLIC, access
from isp_admin.errors import error_response
from isp_admin.extensions import cache, db, talisman
from isp_admin.observability.timing import current_timing

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUERY_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 50, 100)
BUSINESS_CACHE_KEY = "metrics:business"
BUSINESS_TTL = 30

REQUESTS = Counter("flask_http_request", "HTTP requests by endpoint, method and status.",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("flask_http_request_duration_seconds", "Request latency by endpoint and method.",
                    ["endpoint", "method"], buckets=LATENCY_BUCKETS)
QUERIES = Histogram("isp_admin_sql_queries_per_request", "SQL statements run per request, by endpoint.",
                    ["endpoint"], buckets=QUERY_BUCKETS)
POOL_CHECKED_OUT = Gauge("isp_admin_db_pool_checked_out", "Database connections in use, per process.",
                         multiprocess_mode="livesum")
POOL_CAPACITY = Gauge("isp_admin_db_pool_capacity", "Database connections a process may open (size + overflow).",
                      multiprocess_mode="livesum")

bp = Blueprint("metrics", __name__)


def _endpoint() -> str:
    # The endpoint name, never the raw path: ids in paths would make a time series per customer.
    return request.endpoint or ("not_found" if request.url_rule is None else "unknown")


def _observe(response):
    timing = current_timing()
    endpoint, method = _endpoint(), request.method
    if endpoint == "metrics.metrics":
        return response
    _series(REQUESTS, endpoint, method, str(response.status_code)).inc()
    _pool_figures()  # every process keeps its own gauge fresh; the scrape sums the live ones
    if timing is not None:
        _series(LATENCY, endpoint, method).observe(timing.app_ms() / 1000)
        _series(QUERIES, endpoint).observe(timing.queries)
    return response


_children: dict[tuple, object] = {}


def _series(metric, *labels):
    # The labelled child, found by one dict lookup: .labels() validates and locks on every call. The children are
    # prometheus_client's own (it keeps them too), so a forked worker's values stay its own as they were.
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


_last_pool: list = [None]  # (pid, checked out, capacity) last written: a gauge set is a file write in multiprocess


def _pool_figures() -> None:
    pool = db.engine.pool
    checked_out = getattr(pool, "checkedout", None)
    if checked_out is None:  # SQLite's pools keep no such count
        return
    figures = (os.getpid(), checked_out(), pool.size() + max(getattr(pool, "_max_overflow", 0), 0))
    if figures != _last_pool[0]:
        POOL_CHECKED_OUT.set(figures[1])
        POOL_CAPACITY.set(figures[2])
        _last_pool[0] = figures


class ScrapeCollector:
    """Figures read when Prometheus scrapes: jobs and money from the database, memory and disk from the host."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the host gauges, then the business and job gauges (left out while the database is unreachable)."""
        memory, disk = host_figures(self.app.instance_path)
        yield GaugeMetricFamily("isp_admin_memory_used_ratio", "Share of the host's (or container's) memory in "
                                                               "use.", value=memory)
        yield GaugeMetricFamily("isp_admin_disk_free_ratio", "Share of the instance volume that is free.",
                                value=disk)
        figures = cache.get(BUSINESS_CACHE_KEY)
        if figures is None:
            try:
                figures = business_figures()
            except SQLAlchemyError:
                # PostgreSQL is down: a failed scrape would hide the outage's own 503s from Prometheus.
                db.session.rollback()
                return
            cache.set(BUSINESS_CACHE_KEY, figures, timeout=BUSINESS_TTL)
        for name, help_text, value in (
            ("isp_admin_open_invoices", "Issued invoices not yet paid (open or overdue).", figures["open"]),
            ("isp_admin_overdue_invoices", "Invoices past their due date.", figures["overdue"]),
            ("isp_admin_receivables_cents", "Money owed on open and overdue invoices, minor units.",
             figures["receivables"]),
        ):
            yield GaugeMetricFamily(name, help_text, value=value)
        subs = GaugeMetricFamily("isp_admin_subscriptions", "Subscriptions by status.", labels=["status"])
        for status, count in sorted(figures["subscriptions"].items()):
            subs.add_metric([status], count)
        yield subs
        runs = GaugeMetricFamily("isp_admin_job_runs", "Background runs started in the last 24 hours, by kind "
                                                       "and outcome.", labels=["kind", "status"])
        for kind, status, count in figures["job_runs"]:
            runs.add_metric([kind, status], count)
        yield runs
        last = GaugeMetricFamily("isp_admin_job_last_duration_seconds", "Duration of the last finished run of "
                                                                        "each kind.", labels=["kind"])
        finished = GaugeMetricFamily("isp_admin_job_last_finished_timestamp_seconds",
                                     "When the last run of each kind finished (Unix time).", labels=["kind"])
        for kind, seconds, at in figures["last_runs"]:
            last.add_metric([kind], seconds)
            finished.add_metric([kind], at)
        yield last
        yield finished
        requests = GaugeMetricFamily("isp_admin_coa_requests", "Disconnect/CoA requests not answered yet, by status "
                                                               "(pending, failed).", labels=["status"])
        for status, count in sorted(figures["coa"].items()):
            requests.add_metric([status], count)
        yield requests
        attempts = GaugeMetricFamily("isp_admin_payment_attempts", "Online payments waiting on their provider: "
                                                               "pending, and stuck (pending over an hour).",
                                     labels=["state"])
        for state, count in sorted(figures["attempts"].items()):
            attempts.add_metric([state], count)
        yield attempts
        events = GaugeMetricFamily("isp_admin_provider_events_unresolved", "Provider notifications that made no "
                                                                          "payment and need a person, by outcome.",
                                   labels=["outcome"])
        for outcome, count in sorted(figures["provider_events"].items()):
            events.add_metric([outcome], count)
        yield events
        if figures["mismatches"] is not None:  # no check has run yet: no figure, rather than a false zero
            found = GaugeMetricFamily("isp_admin_network_mismatches", "Billing <-> network mismatches the last "
                                                                      "reconciliation found, by kind.", labels=["kind"])
            for kind, count in figures["mismatches"].items():
                found.add_metric([kind], count)
            yield found


def business_figures() -> dict:
    """Count open and overdue invoices, receivables, subscriptions by status, recent job runs and the network's."""
    from datetime import timedelta

    from isp_admin.models import Invoice, JobRun, Subscription
    from isp_admin.models.base import utcnow
    from isp_admin.services.network import coa, reconcile
    from isp_admin.services.payments import monitoring as payments

    open_count, overdue, receivables = db.session.execute(
        select(func.count(), func.count().filter(Invoice.status == "overdue"),
               func.coalesce(func.sum(Invoice.balance_cents), 0))
        .where(Invoice.is_open)).one()
    subscriptions = dict(db.session.execute(select(Subscription.status, func.count()).group_by(Subscription.status))
                         .all())
    since = utcnow() - timedelta(hours=24)
    job_runs = [tuple(r) for r in db.session.execute(
        select(JobRun.kind, JobRun.status, func.count()).where(JobRun.started_at >= since)
        .group_by(JobRun.kind, JobRun.status).order_by(JobRun.kind, JobRun.status))]
    latest = (select(JobRun.kind, func.max(JobRun.finished_at).label("at")).where(JobRun.finished_at.is_not(None))
              .group_by(JobRun.kind).subquery())
    last_runs = [(kind, (finished - started).total_seconds(), finished.timestamp()) for kind, started, finished in
                 db.session.execute(select(JobRun.kind, JobRun.started_at, JobRun.finished_at).join(
                     latest, (latest.c.kind == JobRun.kind) & (latest.c.at == JobRun.finished_at)))]
    # The outbox as it is now; the mismatches as the last check found them (a check per scrape would be too dear).
    coa_requests, mismatches = coa.counts_by_status(), reconcile.last_counts()
    attempts, provider_events = payments.attempt_counts(), payments.events_needing_attention()
    db.session.rollback()  # read-only; end the transaction so the connection goes back clean
    return {"open": open_count, "overdue": overdue, "receivables": int(receivables),
            "subscriptions": subscriptions, "job_runs": job_runs, "last_runs": last_runs,
            "coa": coa_requests, "mismatches": mismatches, "attempts": attempts, "provider_events": provider_events}


def _memory_used_ratio() -> float:
    # A container's limit (cgroup v2) when there is one, else the host's memory.
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            return int(Path("/sys/fs/cgroup/memory.current").read_text()) / int(limit)
    except (OSError, ValueError):
        pass
    import psutil

    return psutil.virtual_memory().percent / 100


def host_figures(path: str) -> tuple[float, float]:
    """Return (memory used ratio, free disk ratio of the volume holding `path`)."""
    target = path if os.path.exists(path) else "/"
    usage = shutil.disk_usage(target)
    return _memory_used_ratio(), usage.free / usage.total


def _registry(app: Flask) -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessRegistry())
    registry.register(ScrapeCollector(app))
    return registry


class _ProcessRegistry:
    """This process's own metrics (one process: the dev server, tests)."""

    def collect(self):
        """Yield every metric of the default registry."""
        return REGISTRY.collect()


def _scraper_allowed() -> bool:
    token = current_app.config.get("METRICS_TOKEN")
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(secret.strip().encode(), token.encode()):
        return True
    if not current_app.config.get("METRICS_ALLOW_PRIVATE", True):
        return False
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    return address.is_private or address.is_loopback


@bp.get("/metrics")
@access(PUBLIC)
# Prometheus scrapes the container over plain HTTP; a redirect to HTTPS (production) would fail every scrape.
@talisman(force_https=False)
def metrics():
    """Serve the metrics in Prometheus' text format (to private networks, or with METRICS_TOKEN)."""
    if not _scraper_allowed():
        return error_response(403, "PERMISSION_DENIED", "Metrics are served to the monitoring network only.")
    started = time.perf_counter()
    _pool_figures()
    body = generate_latest(_registry(current_app._get_current_object()))
    g.metrics_seconds = time.perf_counter() - started
    return Response(body, mimetype=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})


def register_metrics(app: Flask) -> None:
    """Count every request and serve /metrics."""
    app.after_request(_observe)
    app.register_blueprint(bp)

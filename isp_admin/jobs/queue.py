"""The RQ queue from REDIS_URL, and start_run(): record a run and hand it to the workers.

Every name in Redis that this app owns (the queue, the scheduler's keys, stable job ids) starts with the
queue name (RQ_QUEUE, default "isp_admin"), so two deployments or two test runs on one Redis never meet.
"""
from __future__ import annotations

import logging
from datetime import date
from typing import TYPE_CHECKING

import redis
from flask import current_app

from isp_admin.errors import AppError
from isp_admin.models import JobRun
from isp_admin.services.billing import steps
from isp_admin.services.billing.steps import NIGHTLY_STEPS
from isp_admin.services.platform import job_runs
from isp_admin.unit_of_work import unit_of_work

if TYPE_CHECKING:
    from rq import Queue

log = logging.getLogger(__name__)
# The coordinating job of each kind of run in services/billing/steps.py (the table of steps), by the dotted
# name RQ stores: these names are in queued jobs, so they outlive a deploy and never change.
KINDS = {
    steps.NIGHTLY: "isp_admin.jobs.tasks.run_nightly",
    "generate_monthly_invoices": "isp_admin.jobs.tasks.generate_monthly_invoices",
    "mark_overdue": "isp_admin.jobs.tasks.mark_overdue_invoices",
    "enforce_overdue": "isp_admin.jobs.tasks.enforce_overdue_invoices",
    "reactivate_paid": "isp_admin.jobs.tasks.reactivate_paid_subscriptions",
    "send_reminders": "isp_admin.jobs.tasks.send_invoice_reminders",
    "deliver_notifications": "isp_admin.jobs.tasks.deliver_notifications",
    # Bulk actions from the staff lists (jobs/bulk.py: one job per run, its batches counted in as chunks).
    "bulk_send_invoices": "isp_admin.jobs.bulk.run_bulk",
    "bulk_send_reminders": "isp_admin.jobs.bulk.run_bulk",
    "bulk_suspend": "isp_admin.jobs.bulk.run_bulk",
    "bulk_resume": "isp_admin.jobs.bulk.run_bulk",
}
# Steps that count in one chunk per id range; the others count in one piece.
FANNED_OUT = tuple(step.kind for step in steps.STEPS if step.fanned_out)
RETRY_INTERVALS = [10, 60, 300]
JOB_TIMEOUT = 3600  # one chunk of a large run may take minutes; RQ's default of 180 s is too short


class QueueUnavailable(AppError):
    """Background jobs cannot be queued: Redis is not configured or does not answer."""

    status = 503
    code = "EXTERNAL_SERVICE_ERROR"


def queue_name() -> str:
    """Return this deployment's queue name (RQ_QUEUE)."""
    return current_app.config["RQ_QUEUE"]


def redis_connection() -> redis.Redis:
    """Return a Redis connection from REDIS_URL, or raise QueueUnavailable with the reason."""
    url = current_app.config.get("REDIS_URL")
    if not url:
        raise QueueUnavailable("Background jobs need Redis: set REDIS_URL.")
    timeout = current_app.config.get("REDIS_SOCKET_TIMEOUT", 1)
    # The probe has a read timeout too, so a Redis that hangs refuses the job in a second rather than never. The
    # connection handed back has none: a worker's blocking dequeue waits far longer (RQ sets its own).
    probe = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        probe.ping()
    except redis.RedisError as exc:
        # The caller answers 503 or flashes; the operator needs the line in the log as well.
        log.warning("job queue unreachable; nothing queued: %s", exc)
        raise QueueUnavailable(f"Redis at {_safe(url)} does not answer ({exc.__class__.__name__}); "
                               "no job was queued.") from None
    finally:
        probe.close()
    return redis.Redis.from_url(url, socket_connect_timeout=timeout)


def _safe(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname}:{parsed.port or 6379}{parsed.path}"


def get_queue(connection: redis.Redis | None = None) -> Queue:
    """Return the app's RQ queue (raises QueueUnavailable when Redis is missing)."""
    from rq import Queue  # here, not at the top: a web worker that never queues a job need not load RQ

    return Queue(queue_name(), connection=connection or redis_connection(), default_timeout=JOB_TIMEOUT)


def run_job_id(job_run_id: int) -> str:
    """The stable RQ job id of a run's coordinating (or only) job, so the recovery sweep can ask RQ about it."""
    return f"{queue_name()}-run{job_run_id}"


def enqueue(func, *args, queue: Queue | None = None, depends_on=None, description: str | None = None,
            job_id: str | None = None):
    """Enqueue one job with retries and backoff (10 s, 1 min, 5 min); a run's job gets its stable id."""
    from rq import Retry

    from isp_admin.observability.logs import current_request_id

    queue = queue or get_queue()
    if job_id is None and func in KINDS.values() and len(args) >= 2 and isinstance(args[1], int):
        # Every coordinating job is called (as_of, job_run_id, ...): the chain's steps get stable ids too.
        job_id = run_job_id(args[1])
    # The job's log lines carry the id of the request (or job) that queued it, so one grep follows a run.
    meta = {"request_id": current_request_id()} if current_request_id() else None
    # A run's finished job is kept a day (not RQ's 500 s): its arguments tell the recovery sweep the chain's next step.
    return queue.enqueue(func, *args, retry=Retry(max=3, interval=RETRY_INTERVALS), depends_on=depends_on,
                         description=description, job_timeout=JOB_TIMEOUT, failure_ttl=30 * 86400, meta=meta,
                         job_id=job_id, result_ttl=86400 if job_id else None)


def initial_chunks(kind: str) -> int:
    """How many chunks a new run of `kind` expects before it fans out (a fanned-out step sets its own)."""
    return 0 if kind in FANNED_OUT else 1


def start_run(kind: str, as_of: date, triggered_by: str) -> JobRun:
    """Record a run of `kind` for `as_of` and enqueue its coordinating job; commits, so workers see the run."""
    steps.check_kind(kind)
    steps.check_run_date(as_of, dry_run=False)
    queue = get_queue()  # before writing anything: no orphan "running" row when Redis is down
    total = len(NIGHTLY_STEPS) if kind == steps.NIGHTLY else initial_chunks(kind)
    with unit_of_work():  # committed before it is queued: the worker must find the run
        run = job_runs.start_run(kind, as_of, dry_run=False, triggered_by=triggered_by, total_chunks=total)
    try:
        enqueue(KINDS[kind], as_of.isoformat(), run.id, queue=queue, description=f"{kind} for {as_of}")
    except redis.RedisError as exc:
        with unit_of_work():
            job_runs.fail_run(run.id, f"could not enqueue: {exc}")
        raise QueueUnavailable("Redis refused the job; the run is recorded as failed.") from None
    return run

"""`flask rq …`: the RQ worker and the rq-scheduler, inside an app context."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from isp_admin.cli.unit import refusal
from isp_admin.errors import AppError

rq_cli = AppGroup("rq", help="Background workers and the nightly schedule.")


def _connect(redis_connection, burst: bool):
    """Redis for a long-running process: missing config fails; an unreachable Redis is waited for (not in burst)."""
    import redis

    from isp_admin.jobs.worker import wait_for_redis

    try:
        return redis_connection()
    except AppError as exc:
        url = current_app.config.get("REDIS_URL")
        if burst or not url:
            raise refusal(exc) from None
        connection = redis.Redis.from_url(url, socket_connect_timeout=current_app.config["REDIS_SOCKET_TIMEOUT"])
        wait_for_redis(connection, "startup")
        return connection


@rq_cli.command("worker")
@click.option("--burst", is_flag=True, help="Quit once the queues are empty.")
@click.option("--queues", default=None, help="Comma-separated queue names (default: RQ_QUEUE).")
@click.option("--name", default=None, help="Worker name (default: random).")
def worker(burst: bool, queues: str | None, name: str | None) -> None:
    """Run an RQ worker whose jobs run in this app's context."""
    from rq import Queue

    from isp_admin.jobs.queue import JOB_TIMEOUT, queue_name, redis_connection
    from isp_admin.jobs.worker import AppWorker

    connection = _connect(redis_connection, burst)
    names = [q.strip() for q in (queues or queue_name()).split(",") if q.strip()]
    rq_queues = [Queue(q, connection=connection, default_timeout=JOB_TIMEOUT) for q in names]
    # The running job beats well within the lease, so the recovery sweep never takes a live job for a lost one.
    monitoring = max(1, min(30, current_app.config["JOB_LEASE_SECONDS"] // 4))
    the_worker = AppWorker(rq_queues, connection=connection, name=name, app=current_app._get_current_object(),
                           job_monitoring_interval=monitoring)
    # The worker's own scheduler moves retries (10 s, 1 min, 5 min backoff) back onto the queue.
    ok = the_worker.work(burst=burst, with_scheduler=True, logging_level=current_app.config["LOG_LEVEL"])
    if burst and not ok:
        click.echo("No jobs were waiting.")


@rq_cli.command("scheduler")
@click.option("--interval", type=click.IntRange(1, 3600), default=30, show_default=True,
              help="Seconds between checks for jobs that are due.")
@click.option("--burst", is_flag=True, help="Register the schedule, enqueue what is due, and quit.")
def scheduler(interval: int, burst: bool) -> None:
    """Register the periodic jobs (stable ids, reconciled) and run rq-scheduler; its lock keeps one active."""
    from isp_admin.jobs.queue import redis_connection
    from isp_admin.jobs.schedule import AppScheduler, register_schedule, use_business_timezone

    zone = use_business_timezone()
    the_scheduler = AppScheduler(connection=_connect(redis_connection, burst), interval=interval)
    for job_id in register_schedule(the_scheduler):
        click.echo(f"scheduled {job_id} ({zone})")
    the_scheduler.run(burst=burst)


@rq_cli.command("schedule")
def show_schedule() -> None:
    """Print the scheduled periodic jobs."""
    from isp_admin.jobs.schedule import scheduled

    try:
        rows = scheduled()
    except AppError as exc:
        raise refusal(exc) from None
    for job_id, cron, func in rows:
        click.echo(f"{job_id}  {cron}  {func}")
    if not rows:
        click.echo("Nothing is scheduled; start `flask rq scheduler`.")

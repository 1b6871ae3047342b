"""The periodic jobs: one table, registered with rq-scheduler under stable ids, reconciled at start.

Registering twice rewrites the same job ids (never a duplicate), and any scheduled job whose id is not in
the table is cancelled, so removing a row here removes it from Redis too. rq-scheduler computes cron times
in the process's local time zone, so the scheduler process runs with TZ set to TIMEZONE.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass

from flask import current_app
from rq_scheduler import Scheduler

from isp_admin.jobs.queue import JOB_TIMEOUT, queue_name, redis_connection


@dataclass(frozen=True)
class Periodic:
    """One periodic job: its stable name, cron line and function."""

    name: str
    cron: str
    func: str
    description: str


def periodic_jobs() -> list[Periodic]:
    """The table of periodic jobs (cron lines from the NIGHTLY, DELIVERY, NETWORK_* and PAYMENTS_POLL _CRON keys)."""
    config = current_app.config
    return [
        Periodic("nightly", config["NIGHTLY_CRON"],
                 "isp_admin.jobs.tasks.run_nightly",
                 "Nightly billing: invoices, overdue, suspensions, reactivations, reminders, delivery"),
        # Retries of emails that failed for a passing reason, and mail queued during the day.
        Periodic("deliver", config["DELIVERY_CRON"],
                 "isp_admin.jobs.tasks.deliver_notifications", "Deliver queued notifications"),
        # Disconnect/CoA for changes whose immediate sweep was lost, and retries of NASes that did not answer.
        Periodic("network", config["NETWORK_CRON"],
                 "isp_admin.jobs.network.dispatch_network", "Send Disconnect/CoA requests to the NASes"),
        # Sessions, refused logins and addresses that disagree with billing, listed on /network/mismatches.
        Periodic("network_reconcile", config["NETWORK_RECONCILE_CRON"],
                 "isp_admin.jobs.network.reconcile_network", "Check billing against the network"),
        # Online payments whose webhook or callback never came: asked at the provider, or expired.
        Periodic("payments", config["PAYMENTS_POLL_CRON"],
                 "isp_admin.jobs.tasks.poll_payments", "Ask payment providers about payments still pending"),
    ]


class AppScheduler(Scheduler):
    """rq-scheduler with its Redis keys under this deployment's queue name."""

    def __init__(self, connection=None, interval: int = 60):
        name = queue_name()
        super().__init__(queue_name=name, connection=connection or redis_connection(), interval=interval)
        prefix = f"rq:scheduler:{name}"
        self.scheduler_key = prefix
        self.scheduler_lock_key = f"{prefix}:lock"
        self.scheduled_jobs_key = f"{prefix}:scheduled_jobs"
        self.heartbeat_key = heartbeat_key(name)

    def register_birth(self):
        """Register as rq-scheduler does, and beat at once so health sees this deployment's scheduler."""
        super().register_birth()
        self._beat()

    def heartbeat(self):
        """Extend rq-scheduler's own key, and this deployment's heartbeat (its instance keys are not per queue)."""
        super().heartbeat()
        self._beat()

    def run(self, burst: bool = False):
        """rq-scheduler's loop, kept up through Redis outages; the schedule is registered again after each.

        Redis may come back empty (no persistence): the periodic jobs are re-registered under their stable
        ids, which is harmless when they were still there.
        """
        from isp_admin.jobs.worker import REDIS_DOWN, wait_for_redis

        while True:
            try:
                return super().run(burst=burst)
            except REDIS_DOWN:
                if burst:
                    raise
                wait_for_redis(self.connection, "scheduler")
                try:
                    # Our own birth key may have outlived the outage; it is not another scheduler.
                    self.connection.delete(self.key)
                    register_schedule(self)
                except REDIS_DOWN:
                    continue  # gone again: the next round waits again

    def _beat(self) -> None:
        self.connection.set(self.heartbeat_key, str(time.time()), ex=int(self._interval) + 10)


def heartbeat_key(name: str) -> str:
    """The Redis key that holds when this deployment's scheduler last beat (it expires if the scheduler dies)."""
    return f"rq:scheduler:{name}:heartbeat"


def job_id(name: str) -> str:
    """The stable id of a periodic job."""
    return f"{queue_name()}-periodic-{name}"


def use_business_timezone() -> str:
    """Make this process's local time the ISP's TIMEZONE, which rq-scheduler's cron arithmetic uses."""
    zone = current_app.config["TIMEZONE"]
    os.environ["TZ"] = zone
    time.tzset()
    return zone


def register_schedule(scheduler: AppScheduler) -> list[str]:
    """(Re)register every periodic job under its stable id and cancel any other; return the ids."""
    wanted = {job_id(p.name): p for p in periodic_jobs()}
    for job in list(scheduler.get_jobs()):
        if job.id not in wanted:
            scheduler.cancel(job)
            job.delete()
    with warnings.catch_warnings():
        # crontab (pinned) warns that a later version will read now() as UTC; rq-scheduler relies on the
        # local-time reading, which TZ makes the ISP's zone.
        warnings.filterwarnings("ignore", category=FutureWarning, module="rq_scheduler")
        for stable_id, periodic in wanted.items():
            # cron() with a known id overwrites that job's hash and score: re-registering never duplicates.
            scheduler.cron(periodic.cron, periodic.func, id=stable_id, description=periodic.description,
                           queue_name=queue_name(), timeout=JOB_TIMEOUT, use_local_timezone=True)
    return sorted(wanted)


def scheduled() -> list[tuple[str, str, str]]:
    """Return (id, cron line, function) of every scheduled job, for checks and the operator."""
    scheduler = AppScheduler()
    return sorted((job.id, job.meta.get("cron_string", ""), job.func_name) for job in scheduler.get_jobs())

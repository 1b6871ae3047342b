"""The RQ worker, run inside the Flask app's context (as redash does), with jobs attributed to SYSTEM.

`flask rq worker` pushes the app context once, in the worker process; each job runs in a forked work horse
that inherits it. A horse must not reuse database connections opened by its parent, so it drops the
inherited pool (without closing the parent's sockets) before the job and removes its session after.
"""
from __future__ import annotations

import time

import structlog
from flask import Flask, has_app_context
from rq import Worker

from isp_admin.extensions import db
from isp_admin.services.audit import SYSTEM, acting_as

log = structlog.get_logger("isp_admin.jobs")


class AppWorker(Worker):
    """A forking RQ worker whose jobs see the app (config, database session) and write audit as SYSTEM."""

    def __init__(self, *args, app: Flask | None = None, **kwargs):
        if not has_app_context():
            # Started outside `flask rq worker` (e.g. `rq worker -w isp_admin.jobs.worker.AppWorker`).
            from isp_admin import create_app

            (app or create_app()).app_context().push()
        super().__init__(*args, **kwargs)

    def main_work_horse(self, job, queue):
        """Start the forked horse with a fresh connection pool."""
        db.engine.dispose(close=False)
        super().main_work_horse(job, queue)

    def perform_job(self, job, queue, execution) -> bool:
        """Run the job as the system actor, logging under its request id, and leave no session state behind."""
        started = time.perf_counter()
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=(job.meta or {}).get("request_id") or f"job-{job.id}",
                                               job_id=job.id, job=job.func_name)
        log.info("job started", description=job.description)
        try:
            with acting_as(SYSTEM):
                ok = super().perform_job(job, queue, execution)
            log.info("job finished", ok=ok, duration_ms=round((time.perf_counter() - started) * 1000, 1))
            return ok
        finally:
            db.session.remove()
            structlog.contextvars.clear_contextvars()

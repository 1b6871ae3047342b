"""The RQ worker, run inside the Flask app's context (as redash does), with jobs attributed to SYSTEM.

`flask rq worker` pushes the app context once, in the worker process; each job runs in a forked work horse
that inherits it. A horse must not reuse database connections opened by its parent, so it drops the
inherited pool (without closing the parent's sockets) before the job and removes its session after.
"""
from __future__ import annotations

from flask import Flask, has_app_context
from rq import Worker

from isp_admin.extensions import db
from isp_admin.services.audit import SYSTEM, acting_as


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
        """Run the job as the system actor, and leave no session state behind."""
        try:
            with acting_as(SYSTEM):
                return super().perform_job(job, queue, execution)
        finally:
            db.session.remove()

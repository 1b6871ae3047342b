"""The RQ worker, run inside the Flask app's context (as redash does), with jobs attributed to SYSTEM.

`flask rq worker` pushes the app context once, in the worker process; each job runs in a forked work horse
that inherits it. A horse must not reuse database connections opened by its parent, so it drops the
inherited pool (without closing the parent's sockets) before the job and removes its session after.

A Redis outage never stops the worker: every place the work loop talks to Redis waits for it to come back
(1 s doubling to 30 s, logged once when lost and once when back), registers the worker again if Redis came
back empty, and carries on. A thread in the worker sweeps for runs whose jobs were lost (isp_admin.jobs.recovery).
"""
from __future__ import annotations

import logging
import time

import redis
import structlog
from flask import Flask, has_app_context
from rq import Worker, worker_registration

from isp_admin.extensions import db
from isp_admin.services.platform.audit import SYSTEM, acting_as

log = structlog.get_logger("isp_admin.jobs")
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


class _QuietReconnects(logging.Filter):
    """Drop RQ's own line per failed reconnect attempt: the worker logs an outage once, and its end once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "could not connect to Redis" not in str(record.msg)


def wait_for_redis(connection: redis.Redis, what: str, stop=lambda: False, announce: bool = True) -> float:
    """Block until Redis answers (backing off 1 s doubling to 30 s), logging once; return the seconds waited."""
    started = time.monotonic()
    delay = BACKOFF_FIRST
    logged = not announce
    while not stop():
        try:
            connection.ping()
            break
        except REDIS_DOWN as exc:
            if not logged:
                log.warning("redis unreachable; waiting for it", process=what, error=str(exc))
                logged = True
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
    waited = time.monotonic() - started
    if logged and announce:
        log.warning("redis is back", process=what, down_seconds=round(waited, 1))
    return waited


class AppWorker(Worker):
    """A forking RQ worker whose jobs see the app (config, database session) and write audit as SYSTEM."""

    def __init__(self, *args, app: Flask | None = None, **kwargs):
        if not has_app_context():
            # Started outside `flask rq worker` (e.g. `rq worker -w isp_admin.jobs.worker.AppWorker`).
            from isp_admin import create_app

            (app or create_app()).app_context().push()
        super().__init__(*args, **kwargs)
        self.log.addFilter(_QuietReconnects())
        self._redis_lost, self._redis_lost_at = False, 0.0
        self._sweeper = None

    # --- staying up through a Redis outage -----------------------------------------------------------------------

    def _lost_redis(self, exc: Exception) -> None:
        if not self._redis_lost:
            log.warning("redis unreachable; the worker waits for it", worker=self.name, error=str(exc))
            self._redis_lost, self._redis_lost_at = True, time.monotonic()

    def _await_redis(self) -> None:
        """Wait for Redis, then put this worker back on its books if Redis came back empty."""
        wait_for_redis(self.connection, f"worker {self.name}", stop=lambda: self._stop_requested, announce=False)
        if not self._stop_requested:
            self._redis_back()

    def _redis_back(self) -> None:
        """Redis answered again after an outage: say so once, and register the worker again (it may be empty)."""
        if not self._redis_lost:
            return
        try:
            self._register_again()
        except REDIS_DOWN:  # gone again already: the next call waits again
            return
        log.warning("redis is back; the worker carries on", worker=self.name,
                    down_seconds=round(time.monotonic() - self._redis_lost_at, 1))
        self._redis_lost = False

    def _register_again(self) -> None:
        """Put the worker back in RQ's books (idempotent): Redis may have restarted empty."""
        with self.connection.pipeline() as pipeline:
            pipeline.hset(self.key, mapping=self.serialize())
            worker_registration.register(self, pipeline)
            pipeline.expire(self.key, self.worker_ttl + 60)
            pipeline.execute()

    def heartbeat(self, timeout: int | None = None, pipeline=None):
        """Beat as RQ does; if Redis is away, wait for it (the work loop calls this before every dequeue)."""
        if pipeline is not None or self.is_horse:  # a horse never waits: its parent watches Redis
            return super().heartbeat(timeout, pipeline=pipeline)
        while True:
            try:
                super().heartbeat(timeout)
                # RQ's dequeue loop rides out a short outage by itself; a Redis that came back empty in it has
                # forgotten this worker, which health checks (and people) would then not see.
                if self._redis_lost:
                    self._redis_back()
                elif not self.connection.sismember(worker_registration.REDIS_WORKER_KEYS, self.key):
                    self._register_again()
                return None
            except REDIS_DOWN as exc:
                self._lost_redis(exc)
                self._await_redis()
                if self._stop_requested:
                    return None

    def check_for_suspension(self, burst: bool):
        """Check `rq suspend` as RQ does, waiting out a Redis outage instead of quitting."""
        try:
            return super().check_for_suspension(burst)
        except REDIS_DOWN as exc:
            self._lost_redis(exc)
            self._await_redis()
            return None

    def run_maintenance_tasks(self):
        """RQ's registry clean-up; skipped (and Redis awaited) while Redis is away."""
        try:
            return super().run_maintenance_tasks()
        except REDIS_DOWN as exc:
            self._lost_redis(exc)
            self._await_redis()
            return None

    def maintain_heartbeats(self, job, execution):
        """Beat for the running job; while Redis is away keep watching the horse (its work is in PostgreSQL)."""
        try:
            super().maintain_heartbeats(job, execution)
            self._redis_back()
        except REDIS_DOWN as exc:
            self._lost_redis(exc)

    def execute_job(self, job, queue):
        """Run the job in a horse; if Redis went away around it, wait for Redis rather than quit.

        The job's own effects are committed in PostgreSQL (or not at all); what Redis lost about it (its result,
        its registry entry) the recovery sweep does not need: it reads progress from the run.
        """
        try:
            super().execute_job(job, queue)
        except REDIS_DOWN as exc:
            self._lost_redis(exc)
            self._await_redis()

    def teardown(self):
        """Unregister as RQ does; with Redis away there is nothing to unregister from."""
        try:
            super().teardown()
        except REDIS_DOWN:
            log.warning("redis unreachable at shutdown; the worker's key expires by itself", worker=self.name)

    def register_birth(self):
        """Register as RQ does; a key of our own left from before an outage is replaced, not a duplicate."""
        if getattr(self, "_reentering", False):
            self.connection.delete(self.key)
        super().register_birth()

    def work(self, burst: bool = False, **kwargs) -> bool:
        """RQ's work loop, the recovery sweep beside it, and back into the loop if Redis broke it anyway."""
        from isp_admin.jobs.recovery import SweepThread

        if not burst and self._sweeper is None:
            self._sweeper = SweepThread(self.app)
            self._sweeper.start()
        try:
            while True:
                worked = super().work(burst=burst, **kwargs)
                if burst or self._stop_requested or self._redis_answers():
                    return worked
                # RQ quit its loop on a Redis error we did not catch above: wait, and go round again.
                self._lost_redis(redis.exceptions.ConnectionError("work loop ended"))
                self._await_redis()
                if self._stop_requested:
                    return worked
                self._reentering = True
        finally:
            if self._sweeper is not None:
                self._sweeper.stopped.set()

    def _redis_answers(self) -> bool:
        try:
            return bool(self.connection.ping())
        except REDIS_DOWN:
            return False

    @property
    def app(self) -> Flask:
        """The app whose context the worker runs in."""
        from flask import current_app

        return current_app._get_current_object()

    # --- running a job -------------------------------------------------------------------------------------------

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

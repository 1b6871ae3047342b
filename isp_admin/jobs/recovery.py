"""Runs recover by themselves: a sweep finds "running" runs whose jobs RQ no longer has, and resumes them.

A job is lost when Redis restarted empty (no persistence), or when a worker died with its work horse (the job
stays "started" in RQ but nobody beats for it). Every job of a run has a stable id (the coordinator
`run_job_id`, each chunk `_chunk_job_id`), and a fanned-out run keeps the ranges it planned in its counts, so
the sweep can ask RQ about each piece still to do: queued, scheduled or deferred, or started with a heartbeat
younger than the lease, is alive and left alone; anything else is queued again under the same id. That is safe
by construction: a chunk re-run bills only what is still due (under the customers' row locks), chunk_done
counts a chunk once (chunk_key), and a single step is idempotent. A piece whose retries are exhausted, or a run
the sweep has resumed JOB_MAX_RECOVERIES times, is marked failed with the reason. Every action is written on
the run (shown on its page) and as an audit event.

The sweep runs in a thread of every `flask rq worker` (one at a time, under a Redis lock), and the job run
page's "Resume" button calls recover_run() for one run (manual=True: no lease wait, and failed runs reopen).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, timedelta

import redis
from flask import Flask, current_app
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.jobs.queue import FANNED_OUT, KINDS, get_queue, queue_name, run_job_id
from isp_admin.models import JobRun
from isp_admin.models.base import utcnow
from isp_admin.services.billing import steps as step_table
from isp_admin.services.platform import audit, job_runs
from isp_admin.unit_of_work import commit_step

log = logging.getLogger(__name__)
# Runs the CLI does in its own process (run_inline) have no RQ jobs: they are not the workers' to resume.
IN_PROCESS = frozenset({"cli"})
ALIVE = "alive"
LOST = "lost"
FAILED = "failed"
DONE = "done"


@dataclass(frozen=True)
class Outcome:
    """What recovery did with one run: healthy, finished, resumed, failed or skipped, and a sentence for people."""

    run_id: int
    action: str
    message: str


@dataclass(frozen=True)
class Piece:
    """One job a run still needs: its stable id, what it is (for people), and how to queue it again."""

    job_id: str
    label: str
    enqueue: tuple  # ("chunk", index, first, last) or ("coordinator",)


def lease_seconds() -> int:
    """How long a run (and a started job's heartbeat) may go quiet before the sweep looks at it."""
    return int(current_app.config["JOB_LEASE_SECONDS"])


# --- asking RQ about a job -----------------------------------------------------------------------------------------

def job_state(job_id: str, connection: redis.Redis, lease: int) -> tuple[str, str]:
    """Return (alive|lost|failed|done, detail) for the job with this stable id."""
    from rq.exceptions import NoSuchJobError

    try:
        job = Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return LOST, "not in Redis"
    status = job.get_status(refresh=False)
    if status == JobStatus.QUEUED:
        # A queued job whose id is on no list (its worker died between popping and starting it) never runs.
        from rq import Queue

        queue = Queue(job.origin, connection=connection)
        if (connection.lpos(queue.key, job.id) is not None
                or connection.lpos(queue.intermediate_queue_key, job.id) is not None):
            return ALIVE, "queued"
        return LOST, "queued but on no queue"
    if status == JobStatus.STARTED:
        beat = job.last_heartbeat or job.started_at
        age = (utcnow() - _aware(beat)).total_seconds() if beat else None
        if age is not None and age < lease:
            return ALIVE, f"running (last heartbeat {age:.0f}s ago)"
        return LOST, f"started, but its worker has not beaten for {age:.0f}s" if age is not None else "started"
    if status == JobStatus.FINISHED:
        return DONE, "finished"
    if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
        result = job.latest_result()
        reason = (result.exc_string or "").strip().splitlines()[-1:] if result and result.exc_string else []
        return FAILED, f"{status.value} after its retries" + (f": {reason[0][:300]}" if reason else "")
    return ALIVE, status.value  # scheduled (a retry's back-off), deferred, rate limited: RQ will run it


def _aware(moment):
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _forget(job_id: str, connection: redis.Redis) -> None:
    """Delete a dead job and its leftover "started" entries, so RQ's own clean-up never fails the new one."""
    from rq.exceptions import NoSuchJobError

    with contextlib.suppress(NoSuchJobError):
        Job.fetch(job_id, connection=connection).delete()
    registry = StartedJobRegistry(queue_name(), connection=connection)
    stale = [key for key in connection.zrange(registry.key, 0, -1)
             if key.decode().rsplit(":", 1)[0] == job_id]
    if stale:
        connection.zrem(registry.key, *stale)


# --- what a run still needs ----------------------------------------------------------------------------------------

def _chain_after(run: JobRun, connection: redis.Redis) -> tuple:
    """The chain's steps after this run, as its job was given them (`then`); () outside a chain.

    From the run (a fan-out stores them), else from its job's arguments while Redis still has the job, else
    recomputed from the nightly parent's plan (the job was lost with an empty Redis).
    """
    from rq.exceptions import NoSuchJobError

    counts = run.counts or {}
    if job_runs.THEN_KEY in counts:
        return tuple(counts[job_runs.THEN_KEY])
    if run.parent_id is None:
        return ()
    with contextlib.suppress(NoSuchJobError):
        args = Job.fetch(run_job_id(run.id), connection=connection).args
        if len(args) > 2:
            return tuple(args[2])
    parent = db.session.get(JobRun, run.parent_id)
    return _planned_after(parent, run) if parent is not None and parent.kind == "nightly" else ()


def _planned_after(parent: JobRun, step: JobRun) -> tuple:
    """The entries after `step` in its nightly parent's plan, recomputed as run_nightly planned them."""
    plan, _ = step_table.nightly_plan(parent.as_of, exclude_run_id=parent.id)
    entries = [step_table.step_entry(kind, day) for kind, day in plan]
    mine = f"{step.kind}@{step.as_of.isoformat()}"
    return tuple(entries[entries.index(mine) + 1:]) if mine in entries else ()


def _pieces(run: JobRun) -> list[Piece]:
    """The jobs this (non-nightly) run still needs to count in."""
    counts = run.counts or {}
    if run.kind in FANNED_OUT and job_runs.RANGES_KEY in counts:
        done = set(counts.get(job_runs.DONE_KEY, []))
        from isp_admin.jobs.tasks import _chunk_job_id

        return [Piece(_chunk_job_id(run.id, index), f"part {index + 1} (ids {first}-{last})",
                      ("chunk", index, first, last))
                for index, (first, last) in enumerate(counts[job_runs.RANGES_KEY]) if f"{first}-{last}" not in done]
    return [Piece(run_job_id(run.id), f"its {run.kind.replace('_', ' ')} job", ("coordinator",))]


def _enqueue(run: JobRun, pieces: list[Piece], connection: redis.Redis) -> None:
    from isp_admin.jobs.queue import enqueue
    from isp_admin.jobs.tasks import chunk_job_data

    queue = get_queue(connection)
    then = _chain_after(run, connection)  # before _forget deletes the job whose arguments may tell it
    for piece in pieces:
        _forget(piece.job_id, connection)
    chunks = [chunk_job_data(run.kind, run.as_of, run.id, p.enqueue[1], p.enqueue[2], p.enqueue[3], then)
              for p in pieces if p.enqueue[0] == "chunk"]
    if chunks:
        queue.enqueue_many(chunks)
    for piece in pieces:
        if piece.enqueue[0] == "coordinator":
            args = (run.as_of.isoformat(), run.id) if run.kind == "nightly" else (run.as_of.isoformat(), run.id, then)
            enqueue(KINDS[run.kind], *args, queue=queue, job_id=piece.job_id,
                    description=f"{run.kind} for {run.as_of} (recovered)")


# --- recovering one run -------------------------------------------------------------------------------------------

def recover_run(job_run_id: int, *, manual: bool = False, connection: redis.Redis | None = None) -> Outcome:
    """Resume what a run lost (or fail it with the reason); healthy and finished runs are left as they are.

    Commits: it is an edge (the sweep, or the Resume button), and the jobs it queues must find the run's
    notes written. `manual` skips the lease wait and reopens a failed or partial run.
    """
    run = job_runs.lock(job_run_id)
    lease = lease_seconds()
    if run.dry_run or run.triggered_by in IN_PROCESS:
        db.session.rollback()
        return Outcome(job_run_id, "skipped", f"Run #{job_run_id} ran in a command-line process, not on the "
                                              "workers; start it again from the command line.")
    if run.status == "succeeded":
        db.session.rollback()
        return Outcome(job_run_id, "finished", f"Run #{job_run_id} has already succeeded; nothing to resume.")
    if run.status != "running" and not manual:
        db.session.rollback()
        return Outcome(job_run_id, "finished", f"Run #{job_run_id} has already finished ({run.status}).")
    if not manual and _age(run.started_at) < lease:
        db.session.rollback()
        return Outcome(job_run_id, "healthy", f"Run #{job_run_id} started less than {lease}s ago.")
    connection = connection or get_queue().connection
    if run.kind == "nightly":
        return _recover_chain(run, manual, lease, connection)
    return _recover_pieces(run, manual, lease, connection)


def _age(moment) -> float:
    return (utcnow() - _aware(moment)).total_seconds() if moment else float("inf")


def _recover_pieces(run: JobRun, manual: bool, lease: int, connection: redis.Redis) -> Outcome:
    coordinator = job_state(run_job_id(run.id), connection, lease)
    if coordinator[0] == ALIVE and job_runs.RANGES_KEY in (run.counts or {}):
        # Its coordinator is still working (it may be queuing the chunks this very moment).
        db.session.rollback()
        return Outcome(run.id, "healthy", f"Run #{run.id} is being fanned out; nothing is lost.")
    pieces = _pieces(run)
    states = {p.job_id: job_state(p.job_id, connection, lease) for p in pieces}
    failed = [p for p in pieces if states[p.job_id][0] == FAILED]
    if failed and not manual:
        piece = failed[0]
        return _fail(run, f"{run.kind.replace('_', ' ')} {piece.label} {states[piece.job_id][1]}.")
    # A piece still to count in whose job "finished" did not count itself (a run failed under it): run it again.
    lost = [p for p in pieces if states[p.job_id][0] in (LOST, FAILED, DONE)]
    if not lost:
        db.session.rollback()
        alive = sum(1 for s in states.values() if s[0] == ALIVE)
        return Outcome(run.id, "healthy", f"Run #{run.id} is {run.status}: {alive} of its jobs are queued or "
                                          "running, and nothing is lost.")
    if run.status != "running":  # a person resumes a failed or partial run: it runs again
        job_runs.reopen_run(run.id, "resumed by hand")
    return _resume(run, lost, states, manual, connection)


def _resume(run: JobRun, lost: list[Piece], states: dict, manual: bool, connection: redis.Redis) -> Outcome:
    limit = int(current_app.config["JOB_MAX_RECOVERIES"])
    if not manual and int((run.counts or {}).get(job_runs.RECOVERIES_KEY, 0)) >= limit:
        return _fail(run, f"lost its jobs again after {limit} recoveries; gave up ({len(lost)} still to do, "
                          f"e.g. {lost[0].label}: {states[lost[0].job_id][1]}). Resume it once the workers are sound.")
    _enqueue(run, lost, connection)  # before the note: if Redis refuses, nothing is written and the next sweep tries
    what = ", ".join(p.label for p in lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
    reason = states[lost[0].job_id][1]
    message = f"{'resumed by hand' if manual else 'recovered'}: queued {len(lost)} lost job(s) again ({what}; {reason})"
    job_runs.note_recovery(run, message, automatic=not manual)
    audit.record("job_run.recover", run, after={"requeued": [p.job_id for p in lost], "reason": reason,
                                                "manual": manual})
    commit_step()
    log.warning("job run %s %s", run.id, message)
    return Outcome(run.id, "resumed", f"Run #{run.id}: {message}.")


def _fail(run: JobRun, reason: str) -> Outcome:
    job_runs.fail_run(run.id, f"recovery: {reason}")
    job_runs.note_recovery(run, f"marked failed: {reason}", automatic=False)
    audit.record("job_run.recover", run, after={"failed": reason})
    commit_step()
    log.warning("job run %s failed by recovery: %s", run.id, reason)
    return Outcome(run.id, "failed", f"Run #{run.id} was marked failed: {reason}")


def _recover_chain(run: JobRun, manual: bool, lease: int, connection: redis.Redis) -> Outcome:
    """A nightly parent: resume its failed step, start the step that never started, or its own lost job."""
    steps = list(db.session.scalars(select(JobRun).where(JobRun.parent_id == run.id).order_by(JobRun.id)))
    if not steps:
        return _recover_pieces(run, manual, lease, connection)
    if any(s.status == "running" for s in steps) and run.status == "running":
        db.session.rollback()
        return Outcome(run.id, "healthy", f"Run #{run.id} is at a step that is still running; the sweep looks "
                                          "after that step on its own.")
    broken = [s for s in steps if s.status in ("failed", "partial")]
    if broken:
        if not manual:
            return _fail(run, f"its step {broken[-1].kind} #{broken[-1].id} failed: {broken[-1].error}")
        step_id = broken[-1].id
        db.session.rollback()
        outcome = recover_run(step_id, manual=True, connection=connection)
        return Outcome(run.id, outcome.action, f"Run #{run.id}, step {broken[-1].kind}: {outcome.message}")
    last = steps[-1]
    rest = _chain_after(last, connection)
    started = {(s.kind, s.as_of) for s in steps}
    if not rest or step_table.parse_step(rest[0], last.as_of) in started:
        if run.status == "running" and run.done_chunks < run.total_chunks and not manual:
            return _fail(run, f"the chain stopped after {last.kind} #{last.id} with nothing left to start.")
        db.session.rollback()
        return Outcome(run.id, "healthy", f"Run #{run.id} has nothing left to resume.")
    if not manual and _age(last.finished_at) < lease:
        db.session.rollback()
        return Outcome(run.id, "healthy", f"Run #{run.id} finished {last.kind} moments ago; its next step is due.")
    limit = int(current_app.config["JOB_MAX_RECOVERIES"])
    if not manual and int((run.counts or {}).get(job_runs.RECOVERIES_KEY, 0)) >= limit:
        return _fail(run, f"its next step {rest[0]} would not start after {limit} recoveries.")
    if run.status != "running":
        job_runs.reopen_run(run.id, "resumed by hand")
    message = (f"{'resumed by hand' if manual else 'recovered'}: {last.kind} #{last.id} succeeded but "
               f"{rest[0].replace('@', ' for ')} never started; started it")
    job_runs.note_recovery(run, message, automatic=not manual)
    audit.record("job_run.recover", run, after={"started_step": rest[0], "manual": manual})
    commit_step()
    from isp_admin.jobs.tasks import _continue

    _continue(rest, last.as_of, last.id)  # records the step under the parent's lock, commits, and queues it
    log.warning("job run %s %s", run.id, message)
    return Outcome(run.id, "resumed", f"Run #{run.id}: {message}.")


# --- the sweep ----------------------------------------------------------------------------------------------------

def sweep(connection: redis.Redis | None = None) -> list[Outcome]:
    """Recover every running run older than the lease; return what was done with each (commits per run)."""
    cutoff = utcnow() - timedelta(seconds=lease_seconds())
    ids = list(db.session.scalars(select(JobRun.id).where(JobRun.status == "running", JobRun.started_at < cutoff,
                                                         JobRun.dry_run.is_(False)).order_by(JobRun.id)))
    db.session.rollback()
    outcomes = []
    for job_run_id in ids:
        try:
            outcomes.append(recover_run(job_run_id, connection=connection))
        except redis.RedisError:
            db.session.rollback()
            raise  # Redis is gone again: nothing can be queued; the next sweep tries
        except Exception:
            db.session.rollback()
            log.exception("recovery of job run %s failed", job_run_id)
    return outcomes


def stuck_ids(rows, connection: redis.Redis | None = None) -> set[int]:
    """Of these runs (id, status, started_at), the ids running past the lease with none of their jobs alive."""
    lease = lease_seconds()
    candidates = [r.id for r in rows if r.status == "running" and _age(r.started_at) >= lease]
    if not candidates:
        return set()
    try:
        connection = connection or get_queue().connection
        found = set()
        for run in db.session.scalars(select(JobRun).where(JobRun.id.in_(candidates))):
            if run.triggered_by in IN_PROCESS:
                continue
            if not _anything_alive(run, connection, lease):
                found.add(run.id)
        return found
    except Exception:  # Redis down: the page still renders, without the flag
        log.warning("could not ask RQ which runs are stuck", exc_info=True)
        return set()


def _anything_alive(run: JobRun, connection: redis.Redis, lease: int) -> bool:
    steps = []
    if run.kind == "nightly":
        steps = list(db.session.scalars(select(JobRun).where(JobRun.parent_id == run.id, JobRun.status == "running")))
        if steps:
            return any(_anything_alive(step, connection, lease) for step in steps)
    if job_state(run_job_id(run.id), connection, lease)[0] == ALIVE:
        return True
    if run.kind == "nightly":
        return False
    return any(job_state(p.job_id, connection, lease)[0] == ALIVE for p in _pieces(run))


# --- the sweep's thread in every worker -----------------------------------------------------------------------------

class SweepThread(threading.Thread):
    """Run sweep() every JOB_SWEEP_SECONDS in the worker process, one worker at a time (a Redis lock)."""

    def __init__(self, app: Flask):
        super().__init__(name="job-recovery", daemon=True)
        self.app = app
        self.stopped = threading.Event()
        self.connection: redis.Redis | None = None

    def run(self) -> None:
        """Sweep until stopped; a failed sweep (Redis or the database away) is logged and tried again later."""
        interval = max(1, int(self.app.config["JOB_SWEEP_SECONDS"]))
        while not self.stopped.wait(interval):
            # Its own app context and so its own session: the worker's main thread (and the horses it forks) never
            # share this thread's connections; a horse drops the inherited pool before its job.
            with self.app.app_context():
                try:
                    self.sweep_once(interval)
                except Exception as exc:
                    log.info("recovery sweep skipped: %s", exc)
                finally:
                    db.session.remove()

    def sweep_once(self, interval: int) -> list[Outcome]:
        """Take the deployment's sweep lock (it expires by itself) and sweep; [] when another worker holds it."""
        from isp_admin.services.platform.audit import SYSTEM, acting_as

        if self.connection is None:
            timeout = self.app.config["REDIS_SOCKET_TIMEOUT"]
            self.connection = redis.Redis.from_url(self.app.config["REDIS_URL"], socket_connect_timeout=timeout,
                                                   socket_timeout=max(timeout, 5))
        try:
            if not self.connection.set(f"{queue_name()}:recovery-lock", "1", nx=True, ex=max(1, interval - 1)):
                return []
        except redis.RedisError:
            return []  # Redis is away: the worker says so once; nothing can be queued until it is back
        with acting_as(SYSTEM):
            return [o for o in sweep(self.connection) if o.action in ("resumed", "failed")]


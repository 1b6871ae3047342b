"""RQ job functions: thin (dates and ids in, call a service, commit), each run recorded as a JobRun.

Two steps fan out over ranges of ids (billing over customers, delivery over outbox rows): the coordinating
job counts the chunks into its JobRun, then enqueues one job per range. A chunk does its work and counts
itself in within ONE transaction, so a chunk killed mid-way leaves nothing behind, and a re-run finds only
what is still due. The nightly chain passes the remaining steps along (`then`, each "kind@date": a late run
replays every missed day in order); whichever job completes a step (the last chunk, or the step itself)
starts the next one.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date

from rq import Queue, Retry, get_current_job
from rq.job import Job
from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.jobs.queue import JOB_TIMEOUT, KINDS, RETRY_INTERVALS, enqueue, get_queue, initial_chunks, queue_name
from isp_admin.models import JobRun
from isp_admin.services.billing import steps
from isp_admin.services.billing.steps import DAILY_STEPS, NIGHTLY_STEPS, nightly_plan, parse_step, step_entry
from isp_admin.services.messaging import delivery
from isp_admin.services.payments import poll as payment_poll
from isp_admin.services.platform import job_runs
from isp_admin.services.platform.clock import today, utcnow
from isp_admin.unit_of_work import commit_step, discard, unit_of_work

log = logging.getLogger(__name__)


def _as_date(value: date | str | None) -> date:
    if value is None:
        return today()
    return value if isinstance(value, date) else date.fromisoformat(value)


@contextmanager
def _recording(job_run_id: int) -> Iterator[None]:
    """Roll back a failed attempt; on the last attempt (or outside RQ) record the failure on the run."""
    try:
        yield
    except Exception as exc:
        discard()
        job = get_current_job()
        if job is None or not job.retries_left:
            with unit_of_work():
                job_runs.fail_run(job_run_id, f"{type(exc).__name__}: {exc}")
        raise


# --- the steps' bodies (services/billing/steps.py), shared by the jobs and the CLI ----------------------------

def plan_chunks(kind: str, as_of: date) -> list[tuple[int, int]]:
    """Return the id ranges a fanned-out step will work through."""
    return steps.step(kind).chunks(as_of)


def run_chunk(kind: str, as_of: date, first: int, last: int, job_run_id: int) -> bool:
    """Do one chunk and count it in, in one committed transaction; True when it completed its run."""
    with _recording(job_run_id), unit_of_work():
        counts = steps.step(kind).run_chunk(as_of, first, last, job_run_id, commit_step)
        return _count_in(job_run_id, counts, chunk_key=f"{first}-{last}")


def run_single(kind: str, as_of: date, job_run_id: int) -> bool:
    """Run a one-piece step and count it in; True when it completed its run."""
    with _recording(job_run_id), unit_of_work():
        return _count_in(job_run_id, steps.step(kind).run(as_of), chunk_key="all")


def _count_in(job_run_id: int, counts: dict, chunk_key: str) -> bool:
    # Read the status under the row lock: exactly one chunk sees running -> succeeded, and it alone chains on.
    was_running = job_runs.lock(job_run_id).status == "running"
    run = job_runs.chunk_done(job_run_id, counts, chunk_key=chunk_key)
    return was_running and run.status == "succeeded"


# --- the RQ jobs ---------------------------------------------------------------------------------------------

def _chunk_job_id(job_run_id: int, index: int) -> str:
    return f"{queue_name()}-run{job_run_id}-chunk{index}"


# The job each fanned-out step runs per range (the recovery sweep re-queues lost ones with the same call).
CHUNK_FUNCS = {
    "generate_monthly_invoices": "isp_admin.jobs.tasks.bill_chunk",
    "deliver_notifications": "isp_admin.jobs.tasks.deliver_batch",
}


def chunk_job_data(kind: str, as_of: date, job_run_id: int, index: int, first: int, last: int, then: tuple):
    """The RQ job (stable id, retries) for one range of a fanned-out run, for Queue.enqueue_many."""
    return Queue.prepare_data(
        CHUNK_FUNCS[kind], (as_of.isoformat(), first, last, job_run_id, tuple(then)), timeout=JOB_TIMEOUT,
        job_id=_chunk_job_id(job_run_id, index), retry=Retry(max=3, interval=RETRY_INTERVALS),
        description=f"{kind} {as_of} ids {first}-{last}", result_ttl=86400, failure_ttl=30 * 86400)


def _fan_out(kind: str, as_of: date, job_run_id: int, then: tuple) -> int:
    run = db.session.get(JobRun, job_run_id)
    queue = get_queue()
    # A retried (or recovered) coordinator whose run has fanned out already must not plan or queue again: the
    # ranges it planned are on the run, and the recovery sweep re-queues whichever of them were lost.
    if (run is None or run.status != "running" or job_runs.RANGES_KEY in (run.counts or {})
            or Job.exists(_chunk_job_id(job_run_id, 0), queue.connection)):
        return 0
    with _recording(job_run_id):
        with unit_of_work():
            ranges = plan_chunks(kind, as_of)
            job_runs.expect_chunks(job_run_id, len(ranges), ranges=ranges, then=tuple(then))
        queue.enqueue_many([chunk_job_data(kind, as_of, job_run_id, index, first, last, then)
                            for index, (first, last) in enumerate(ranges)])
    if not ranges:
        _continue(then, as_of, job_run_id)
    return len(ranges)


def _continue(then: tuple, as_of: date, job_run_id: int) -> None:
    """Start the next step of the chain, as a sibling of the step that just completed."""
    parent_id = db.session.scalar(select(JobRun.parent_id).where(JobRun.id == job_run_id))
    if then and parent_id is not None:
        kind, day = parse_step(then[0], as_of)
        _start_step(parent_id, kind, tuple(then[1:]), day)


def _start_step(parent_id: int, kind: str, rest: tuple, as_of: date) -> None:
    """Record and enqueue one step of the chain, once (the parent's row lock orders concurrent callers)."""
    with unit_of_work():
        job_runs.lock(parent_id)
        # A catch-up chain runs each step once per missed day: the date is part of what "already started" means.
        if db.session.scalar(select(JobRun.id).where(JobRun.parent_id == parent_id, JobRun.kind == kind,
                                                     JobRun.as_of == as_of)):
            return  # already started by an earlier attempt
        step_id = job_runs.start_run(kind, as_of, dry_run=False, triggered_by="nightly",
                                     total_chunks=initial_chunks(kind), parent_id=parent_id).id
    try:  # queued only once the step's row is committed: a worker must find it
        enqueue(KINDS[kind], as_of.isoformat(), step_id, rest, description=f"{kind} for {as_of}")
    except Exception as exc:
        with unit_of_work():
            job_runs.fail_run(step_id, f"could not enqueue: {exc}")
        raise


def generate_monthly_invoices(as_of: date | str, job_run_id: int, then: tuple = ()) -> int:
    """Fan the monthly run out: one bill_chunk job per range of due customers; return how many chunks."""
    return _fan_out("generate_monthly_invoices", _as_date(as_of), job_run_id, then)


def bill_chunk(as_of: date | str, first: int, last: int, job_run_id: int, then: tuple = ()) -> dict:
    """Bill customers first..last in one transaction (a re-run finds nothing due); the last chunk chains on."""
    as_of = _as_date(as_of)
    if run_chunk("generate_monthly_invoices", as_of, first, last, job_run_id):
        _continue(then, as_of, job_run_id)
    return {"first": first, "last": last}


def deliver_notifications(as_of: date | str | None = None, job_run_id: int | None = None, then: tuple = ()) -> int:
    """Fan delivery of the queued outbox out over batches; the periodic call records a run only when needed."""
    as_of = _as_date(as_of)
    if job_run_id is None:
        if not delivery.queued_ids(limit=1):
            return 0
        with unit_of_work():
            job_run_id = job_runs.start_run("deliver_notifications", as_of, False, "scheduler").id
    return _fan_out("deliver_notifications", as_of, job_run_id, then)


def deliver_batch(as_of: date | str, first: int, last: int, job_run_id: int, then: tuple = ()) -> dict:
    """Send the queued notifications with ids first..last; the last batch chains on."""
    as_of = _as_date(as_of)
    if run_chunk("deliver_notifications", as_of, first, last, job_run_id):
        _continue(then, as_of, job_run_id)
    return {"first": first, "last": last}


def _single_job(kind: str, as_of: date | str, job_run_id: int, then: tuple) -> None:
    as_of = _as_date(as_of)
    if run_single(kind, as_of, job_run_id):
        _continue(then, as_of, job_run_id)


def mark_overdue_invoices(as_of: date | str, job_run_id: int, then: tuple = ()) -> None:
    """Mark open invoices past their due date overdue."""
    _single_job("mark_overdue", as_of, job_run_id, then)


def enforce_overdue_invoices(as_of: date | str, job_run_id: int, then: tuple = ()) -> None:
    """Suspend customers unpaid past due date + grace."""
    _single_job("enforce_overdue", as_of, job_run_id, then)


def reactivate_paid_subscriptions(as_of: date | str, job_run_id: int, then: tuple = ()) -> None:
    """Reactivate non-payment suspensions of customers who owe nothing overdue (the safety net)."""
    _single_job("reactivate_paid", as_of, job_run_id, then)


def send_invoice_reminders(as_of: date | str, job_run_id: int, then: tuple = ()) -> None:
    """Queue the reminders due on `as_of`."""
    _single_job("send_reminders", as_of, job_run_id, then)


def poll_payments() -> dict:
    """Ask the providers about pending payments whose notification never came; expire the abandoned ones."""
    counts = payment_poll.poll_pending(utcnow(), commit_step)  # each attempt committed on its own
    commit_step()
    if any(counts.values()):
        log.info("payments poll: %s", counts)
    return counts


# --- the nightly chain: every missed day in date order, then delivery once -----------------------------------
#
# A late run (after a scheduler outage) must do what the on-time runs would have done (DESIGN §3): billing every
# missed period before enforcing would bill a customer past grace for periods the on-time runs skip as
# suspended, and reminders would skip the schedule steps passed in between. So the run for D replays each day
# since the last nightly run that succeeded, in order, each step for its own date; emails go out once at the end.
# What a replay cannot undo: it sees payments recorded during the outage on every replayed day (the services read
# balances as they are now), so a payment made in the gap counts from the start of the gap; and the emails of
# all replayed days leave together, rendered with today's balance.

def _plan_run(job_run_id: int, as_of: date) -> list[tuple[str, date]]:
    """Plan a nightly run and record it on the run: one chunk per step, and the days replayed or skipped."""
    plan, skipped = nightly_plan(as_of, exclude_run_id=job_run_id)
    days = sum(1 for kind, _ in plan if kind == DAILY_STEPS[0])
    with unit_of_work():
        _record_plan(job_run_id, plan, days, skipped, as_of)
    return plan


def _record_plan(job_run_id: int, plan: list[tuple[str, date]], days: int, skipped: int, as_of: date) -> None:
    run = job_runs.lock(job_run_id)
    run.total_chunks = len(plan)
    if days > 1 or skipped:
        # Set, not added: a retried coordinator records the same plan again.
        run.counts = {**(run.counts or {}), "days_replayed": days, "replayed_from": plan[0][1].isoformat()}
        if skipped:
            run.counts = {**run.counts, "days_not_replayed": skipped}
            log.warning("nightly run #%s for %s: %s missed days before %s exceed NIGHTLY_CATCH_UP_DAYS and were "
                        "not replayed", job_run_id, as_of, skipped, plan[0][1])


def run_nightly(as_of: date | str | None = None, job_run_id: int | None = None) -> int:
    """Run the nightly chain for every missed day up to `as_of`, in order, then deliver; return its run id."""
    as_of = _as_date(as_of)
    if job_run_id is None:  # the scheduler's call: today's business date, recorded here
        with unit_of_work():
            steps.check_run_date(as_of, dry_run=False)
            job_run_id = job_runs.start_run("nightly", as_of, False, "scheduler",
                                            total_chunks=len(NIGHTLY_STEPS)).id
    with _recording(job_run_id):
        plan = _plan_run(job_run_id, as_of)
        (kind, day), rest = plan[0], tuple(step_entry(k, d) for k, d in plan[1:])
        _start_step(job_run_id, kind, rest, day)
    return job_run_id


# --- in-process runs (the CLI): the same bodies, chunk after chunk, each chunk committed ---------------------

def run_inline(kind: str, as_of: date, triggered_by: str, parent_id: int | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> JobRun:
    """Run one step (or the nightly chain) in this process, recorded as a JobRun; return the run."""
    steps.check_kind(kind)
    steps.check_run_date(as_of, dry_run=False)
    if kind == steps.NIGHTLY:
        with unit_of_work():
            run = job_runs.start_run(kind, as_of, False, triggered_by, total_chunks=len(NIGHTLY_STEPS))
        with _recording(run.id):
            plan = _plan_run(run.id, as_of)
        catching_up = len(plan) > len(NIGHTLY_STEPS)
        for step, day in plan:
            child = run_inline(step, day, triggered_by, parent_id=run.id,
                               progress=_dated(progress, day) if catching_up else progress)
            if child.status != "succeeded":
                break
        db.session.refresh(run)
        return run
    with unit_of_work():
        run = job_runs.start_run(kind, as_of, False, triggered_by, total_chunks=initial_chunks(kind),
                                 parent_id=parent_id)
    if not steps.step(kind).fanned_out:
        run_single(kind, as_of, run.id)
    else:
        with _recording(run.id), unit_of_work():
            ranges = plan_chunks(kind, as_of)
            job_runs.expect_chunks(run.id, len(ranges))
        for index, (first, last) in enumerate(ranges, 1):
            run_chunk(kind, as_of, first, last, run.id)
            if progress:
                progress(kind, index, len(ranges))
    db.session.refresh(run)
    return run


def _dated(progress: Callable[[str, int, int], None] | None, day: date) -> Callable[[str, int, int], None] | None:
    # In a catch-up each replayed day's step gets a bar of its own, labelled with its date.
    if progress is None:
        return None
    return lambda step, done, total: progress(f"{step} {day}", done, total)

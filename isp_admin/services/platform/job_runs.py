"""The ledger of job runs: start one, count its chunks in, fail it, and report its progress.

A fanned-out run knows its chunk count up front; each chunk calls chunk_done() in the SAME transaction as
its own writes, so a chunk that commits is counted exactly once and a chunk that dies is not counted at all.
When the last chunk is in, the run succeeds and reports its counts to its parent (the nightly chain).
"""
from __future__ import annotations

from datetime import date

from sqlalchemy import select, update

from isp_admin.errors import NotFound
from isp_admin.extensions import db
from isp_admin.models import JobRun
from isp_admin.models.base import utcnow
from isp_admin.services.platform.bulk import is_postgres

PAGE_SIZE = 25
# Counts whose name starts with "_" are bookkeeping (the chunks already counted), not shown to people.
DONE_KEY = "_done"
# A fanned-out run's planned ranges and the chain steps after it, so lost chunks can be queued again as they were.
RANGES_KEY = "_ranges"
THEN_KEY = "_then"
# How often the recovery sweep has resumed the run, and what it (or a person) did, newest last.
RECOVERIES_KEY = "_recoveries"
RECOVERY_LOG_KEY = "_recovery_log"
# One bad row never stops a run (DESIGN §3): a customer a step could not process is left out, the step goes on, and
# the run keeps the first MAX_FAILURES of them (customer, step, date, error) plus how many there were in all.
FAILURES_KEY = "_failures"
FAILED_COUNT_KEY = "failed_customers"
MAX_FAILURES = 100
ERROR_LENGTH = 300


def start_run(kind: str, as_of: date, dry_run: bool, triggered_by: str, total_chunks: int = 0,
              parent_id: int | None = None) -> JobRun:
    """Record that a run of `kind` for `as_of` has started."""
    run = JobRun(kind=kind, as_of=as_of, dry_run=dry_run, status="running", triggered_by=triggered_by,
                 total_chunks=total_chunks, done_chunks=0, counts={}, parent_id=parent_id)
    db.session.add(run)
    db.session.flush()
    return run


def lock(job_run_id: int) -> JobRun:
    """Lock a run's row (FOR UPDATE) and return it fresh: concurrent chunks and chain steps queue here."""
    return _locked(job_run_id)


def _locked(job_run_id: int) -> JobRun:
    stmt = select(JobRun).where(JobRun.id == job_run_id).execution_options(populate_existing=True)
    if is_postgres():
        stmt = stmt.with_for_update()
    run = db.session.scalar(stmt)
    if run is None:
        raise NotFound(f"No job run #{job_run_id}.")
    return run


def _merge(counts: dict, more: dict) -> dict:
    merged = dict(counts or {})
    for key, value in (more or {}).items():
        if key == FAILURES_KEY:  # appended, not replaced: every chunk and step adds its own, up to the bound
            merged[key] = [*merged.get(key, []), *value][:MAX_FAILURES]
        elif isinstance(value, int) and not isinstance(value, bool):
            merged[key] = merged.get(key, 0) + value
        else:
            merged[key] = value
    return merged


def expect_chunks(job_run_id: int, total: int, ranges: list[tuple[int, int]] | None = None,
                  then: tuple = ()) -> None:
    """Set how many chunks the run will count in (and the ranges planned); a run with nothing to do succeeds."""
    run = _locked(job_run_id)
    run.total_chunks = total
    if ranges is not None:
        run.counts = {**(run.counts or {}), RANGES_KEY: [list(r) for r in ranges], THEN_KEY: list(then)}
    db.session.flush()
    if total == 0:
        _finish(run)


def chunk_done(job_run_id: int, counts: dict, chunk_key: str | None = None) -> JobRun:
    """Count one chunk in and add its counts; the last chunk marks the run succeeded.

    The row lock serialises concurrent chunks, so no count is lost; `chunk_key` makes a re-run of a chunk
    that already committed (a retry after a crash between commit and acknowledgement) count nothing twice.
    """
    run = _locked(job_run_id)
    merged = dict(run.counts or {})
    if chunk_key is not None:
        done = list(merged.get(DONE_KEY, []))
        if chunk_key in done:
            return run
        merged[DONE_KEY] = [*done, chunk_key]
    merged = _merge(merged, counts)
    table = JobRun.__table__
    db.session.execute(update(table).where(table.c.id == job_run_id)
                       .values(done_chunks=table.c.done_chunks + 1, counts=merged))
    db.session.refresh(run)
    if run.status == "running" and run.done_chunks >= run.total_chunks:
        _finish(run)
    return run


def _finish(run: JobRun) -> None:
    run.status = "succeeded"
    run.finished_at = utcnow()
    db.session.flush()
    if run.parent_id is not None:
        # The step's failures go up with its counts, so the nightly run lists every customer any step left out.
        left_out = (run.counts or {}).get(FAILURES_KEY)
        chunk_done(run.parent_id, {**visible_counts(run.counts), **({FAILURES_KEY: left_out} if left_out else {})},
                   chunk_key=f"run:{run.id}")


def fail_run(job_run_id: int, error: str) -> JobRun:
    """Mark the run failed (partial when some chunks did commit) and its parent with it."""
    run = _locked(job_run_id)
    if run.status in ("running", "partial"):
        run.status = "partial" if run.done_chunks else "failed"
        run.finished_at = utcnow()
        run.error = (error or "unknown error")[:4000]
        db.session.flush()
        if run.parent_id is not None:
            fail_run(run.parent_id, f"{run.kind} #{run.id}: {run.error}")
    return run


def note_recovery(run: JobRun, message: str, *, automatic: bool) -> None:
    """Write what recovery did on a locked run (shown on its page); an automatic one counts towards the limit."""
    counts = dict(run.counts or {})
    if automatic:
        counts[RECOVERIES_KEY] = int(counts.get(RECOVERIES_KEY, 0)) + 1
    log = list(counts.get(RECOVERY_LOG_KEY, []))[-19:]  # the last twenty are plenty for a person to follow
    counts[RECOVERY_LOG_KEY] = [*log, f"{utcnow():%Y-%m-%d %H:%M:%S} UTC: {message}"]
    run.counts = counts
    db.session.flush()


def reopen_run(job_run_id: int, note: str) -> JobRun:
    """Set a failed or partial run (and the chain above it) running again, so resumed work can complete it."""
    run = _locked(job_run_id)
    if run.status in ("failed", "partial"):
        if run.error:
            note = f"{note} (it had failed: {run.error})"
        run.status, run.finished_at, run.error = "running", None, None
        counts = dict(run.counts or {})
        counts.pop(RECOVERIES_KEY, None)  # a person resumed it: the automatic sweep starts counting afresh
        run.counts = counts
        note_recovery(run, note, automatic=False)
        if run.parent_id is not None:
            reopen_run(run.parent_id, f"step {run.kind} #{run.id} resumed")
    return run


def recovery_log(run: JobRun) -> list[str]:
    """What recovery did on this run, oldest first."""
    return list((run.counts or {}).get(RECOVERY_LOG_KEY, []))


def is_transient(exc: BaseException) -> bool:
    """Whether a retry of the whole chunk may cure `exc` (lost connection, deadlock, lock or statement timeout)."""
    import psycopg
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, (OperationalError, psycopg.OperationalError)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def failure(customer_id: int, step: str, as_of: date, exc: BaseException) -> dict:
    """Describe one customer a step left out (error class and a short message), for the run's counts."""
    # A database error's own class and text (RaiseException: …), not SQLAlchemy's wrapper with the SQL and a link.
    exc = getattr(exc, "orig", None) or exc
    message = " ".join(str(exc).split())  # one line: database errors carry multi-line details
    return {"customer_id": customer_id, "step": step, "as_of": as_of.isoformat(),
            "error": type(exc).__name__, "message": message[:ERROR_LENGTH]}


def failure_counts(failures: list[dict]) -> dict:
    """The counts a chunk or step adds for its failures (nothing when there are none)."""
    if not failures:
        return {}
    return {FAILED_COUNT_KEY: len(failures), FAILURES_KEY: failures[:MAX_FAILURES]}


def failed_count(run) -> int:
    """How many customers the run (any of its steps) left out; `run` is a JobRun or a row with counts."""
    return int((run.counts or {}).get(FAILED_COUNT_KEY, 0) or 0)


def failures(run: JobRun) -> list[dict]:
    """The customers the run left out (the first MAX_FAILURES), each with the customer's name when it still exists."""
    from isp_admin.models import Customer

    rows = list((run.counts or {}).get(FAILURES_KEY, []))
    ids = {row["customer_id"] for row in rows if row.get("customer_id") is not None}
    names = {}
    if ids:
        names = dict(db.session.execute(select(Customer.id, Customer.name).where(Customer.id.in_(ids))).all())
    return [{**row, "customer_name": names.get(row.get("customer_id"))} for row in rows]


def visible_counts(counts: dict | None) -> dict:
    """Return the counts people read (without the bookkeeping keys)."""
    return {k: v for k, v in (counts or {}).items() if not k.startswith("_")}


def get_run(job_run_id: int) -> JobRun:
    """Return one job run or raise NotFound."""
    run = db.session.get(JobRun, job_run_id)
    if run is None:
        raise NotFound(f"No job run #{job_run_id}.")
    return run


def progress(job_run_id: int) -> dict:
    """Return a run's live progress for the UI: status, chunks done of total, percent, counts, times, error."""
    run = db.session.scalar(select(JobRun).where(JobRun.id == job_run_id)
                            .execution_options(populate_existing=True))
    if run is None:
        raise NotFound(f"No job run #{job_run_id}.")
    if run.status == "succeeded":
        percent = 100
    elif run.total_chunks:
        percent = min(100, run.done_chunks * 100 // run.total_chunks)
    else:
        percent = 0
    steps = list(db.session.execute(
        select(JobRun.id, JobRun.kind, JobRun.status, JobRun.done_chunks, JobRun.total_chunks)
        .where(JobRun.parent_id == run.id).order_by(JobRun.id)).mappings())
    return {
        "id": run.id, "kind": run.kind, "as_of": run.as_of.isoformat(), "dry_run": run.dry_run,
        "status": run.status, "done": run.done_chunks, "total": run.total_chunks, "percent": percent,
        "counts": visible_counts(run.counts),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "error": run.error, "triggered_by": run.triggered_by, "parent_id": run.parent_id,
        "finished": run.status != "running",
        "steps": [dict(s) for s in steps],
    }


def last_nightly_run() -> JobRun | None:
    """Return the newest nightly chain (its top-level run, not a step of it), if one ever ran."""
    return db.session.scalar(select(JobRun).where(JobRun.kind == "nightly", JobRun.parent_id.is_(None))
                             .order_by(JobRun.id.desc()).limit(1))


def list_runs(page: int = 1, per_page: int = PAGE_SIZE, kind: str | None = None) -> tuple[list[JobRun], bool]:
    """Return one page of runs, newest first, and whether a next page exists (job_runs is a small table)."""
    page = max(1, int(page or 1))
    stmt = select(JobRun).order_by(JobRun.id.desc()).offset((page - 1) * per_page).limit(per_page + 1)
    if kind:
        stmt = stmt.where(JobRun.kind == kind)
    rows = list(db.session.scalars(stmt))
    return rows[:per_page], len(rows) > per_page

"""Bulk actions too large for one request: recorded as a job run and done by a worker, batch by batch.

The rows were chosen (the filter re-run on the server) when staff confirmed; the run keeps their ids, the action
and who confirmed it, so each row's audit event names that person, not the system. Each batch does its rows and
counts itself in within ONE transaction (chunk_key), so a retried or recovered job skips the batches already
counted, and a batch cut short is done again whole — harmless, as every action is idempotent per row. The run's
page (/billing/jobs/<id>) follows it live and lists the rows that failed.
"""
from __future__ import annotations

from datetime import date

from isp_admin.errors import Invalid
from isp_admin.jobs.queue import KINDS, enqueue, get_queue
from isp_admin.models import JobRun
from isp_admin.services.billing.bulk_actions import ACTIONS as INVOICE_ACTIONS
from isp_admin.services.customers.bulk_actions import ACTIONS as CUSTOMER_ACTIONS
from isp_admin.services.platform import audit, bulk_actions, job_runs
from isp_admin.unit_of_work import unit_of_work

ACTIONS = {**INVOICE_ACTIONS, **CUSTOMER_ACTIONS}
SPEC_KEY = "_bulk"  # bookkeeping (a leading "_"): not shown among the run's counts
BATCH = 25  # rows per transaction: each batch holds its customers' row locks until it commits


def kind_of(action: str) -> str:
    """The job run kind of a bulk action ("bulk_suspend")."""
    return f"bulk_{action}"


def _batch_keys(count: int) -> list[tuple[int, str]]:
    return [(start, f"rows {start + 1}-{min(start + BATCH, count)}") for start in range(0, count, BATCH)]


def start_bulk_run(action: str, ids: list[int], actor: audit.Actor, as_of: date) -> JobRun:
    """Record a run of `action` over `ids` and queue its job; commits, so the worker finds the run."""
    if not ids:
        raise Invalid("Select at least one row.")
    queue = get_queue()  # before writing anything: no orphan "running" row when Redis is down
    kind = kind_of(action)
    with unit_of_work():
        run = job_runs.start_run(kind, as_of, dry_run=False, triggered_by=actor.label,
                                 total_chunks=len(_batch_keys(len(ids))))
        run.counts = {SPEC_KEY: {"action": action, "ids": ids, "actor": [actor.type, actor.id, actor.label]}}
        audit.record("bulk.start", run, after={"action": action, "rows": len(ids)})
    try:
        enqueue(KINDS[kind], as_of.isoformat(), run.id, queue=queue, description=f"{kind}: {len(ids)} rows")
    except Exception as exc:
        with unit_of_work():
            job_runs.fail_run(run.id, f"could not enqueue: {exc}")
        raise
    return run


def run_bulk(as_of: date | str, job_run_id: int, then: tuple = ()) -> dict:
    """Do a bulk action's rows batch by batch, each batch committed with its count; return the counts."""
    from isp_admin.jobs.tasks import _as_date, _recording  # here: the web edge imports this module, RQ need not load

    as_of = _as_date(as_of)
    spec = (job_runs.get_run(job_run_id).counts or {})[SPEC_KEY]
    action = ACTIONS[spec["action"]]
    ids = [int(i) for i in spec["ids"]]
    with audit.acting_as(audit.Actor(*spec["actor"])):
        for start, key in _batch_keys(len(ids)):
            with _recording(job_run_id), unit_of_work():
                run = job_runs.lock(job_run_id)  # concurrent copies of this job (a recovery) queue here
                if run.status != "running" or key in (run.counts or {}).get(job_runs.DONE_KEY, []):
                    continue
                result = bulk_actions.apply(action, ids[start:start + BATCH], as_of)
                job_runs.chunk_done(job_run_id, result.job_counts(), chunk_key=key)
    return job_runs.visible_counts(job_runs.get_run(job_run_id).counts)

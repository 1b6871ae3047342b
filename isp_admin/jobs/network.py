"""Network jobs: the CoA sweep (every minute, and at once after a committed subscription change) and the nightly
billing ↔ network reconciliation."""
from __future__ import annotations

import logging

from isp_admin.services.network import coa, reconcile
from isp_admin.unit_of_work import commit_step, unit_of_work

log = logging.getLogger(__name__)
# The nightly check records every kind's full count; the rows it keeps in the log are only a sample.
RECONCILE_LIMIT = 100


def dispatch_network() -> dict:
    """Process committed subscription changes into Disconnect/CoA requests and send what is due."""
    counts = coa.dispatch(commit_step)
    commit_step()
    if counts["changes"] or any(counts[k] for k in ("acked", "retry", "failed", "fallback")):
        log.info("network dispatch: %s", counts)
    return counts


def reconcile_network() -> dict:
    """Check billing against the network and record what was found (the mismatches page and /metrics read it)."""
    try:
        with unit_of_work():
            report, run = reconcile.check(limit=RECONCILE_LIMIT, triggered_by="scheduler")
    except Exception as exc:
        # Recorded as a failed run, so the failed-run alert pages someone: a silent gap would read as "all agree".
        with unit_of_work():
            reconcile.record_failure(f"{type(exc).__name__}: {exc}", "scheduler")
        raise
    if report.total:
        log.warning("network reconciliation: %s mismatches %s (job run #%s); see /network/mismatches",
                    report.total, report.counts, run.id)
    return {**report.counts, "coa_failed": report.coa["failed"]}

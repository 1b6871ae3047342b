"""Network jobs: the CoA sweep (every minute, and at once after a committed subscription change) and the nightly
billing ↔ network reconciliation."""
from __future__ import annotations

import logging

from isp_admin.services.network import coa
from isp_admin.unit_of_work import commit_step

log = logging.getLogger(__name__)


def dispatch_network() -> dict:
    """Process committed subscription changes into Disconnect/CoA requests and send what is due."""
    counts = coa.dispatch(commit_step)
    commit_step()
    if counts["changes"] or any(counts[k] for k in ("acked", "retry", "failed", "fallback")):
        log.info("network dispatch: %s", counts)
    return counts

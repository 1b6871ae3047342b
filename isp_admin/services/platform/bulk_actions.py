"""Bulk actions on a selection of rows: a preview of what each row would see, then the action, row by row.

Each domain declares its actions as BulkAction records (services/billing/bulk_actions.py for invoices,
services/customers/bulk_actions.py for customers): how to read a batch of rows, what a row would see (the preview;
the same rule the action checks again, under the customer's lock, when it runs), and the action on one row.

One row never stops the others: each runs in a savepoint, and a row a domain rule refuses (or that fails) is rolled
back alone and reported with its reason. Every action is idempotent per row — a row already done is skipped with
the reason — so the same bulk action run twice does nothing more the second time.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date

from isp_admin.errors import AppError
from isp_admin.extensions import db
from isp_admin.services.platform.job_runs import FAILED_COUNT_KEY, FAILURES_KEY, MAX_FAILURES, is_transient
from isp_admin.services.platform.pagination import COUNT_CAP

log = logging.getLogger(__name__)
# Rows read per query (an IN list of ids): a whole selection (at most COUNT_CAP rows, web/bulk) in one read, so a
# preview costs the same few queries for 3 rows or 10,000; a run's batches are far smaller (jobs/bulk.py).
READ_BATCH = COUNT_CAP
SAMPLES = 10
FAILED = "failed"


@dataclass(frozen=True)
class Row:
    """One selected row as a bulk action reads it: its id, its customer, a label for people, and its state."""

    id: int
    customer_id: int
    label: str
    state: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What happens (or would happen) to one row: a key to count ("sent", "skipped_already_sent", "failed")
    and a note for people."""

    key: str
    note: str = ""

    @property
    def skipped(self) -> bool:
        """Whether the row is left as it is (already done, or not something the action applies to)."""
        return self.key.startswith("skipped")


@dataclass(frozen=True)
class BulkAction:
    """An action staff can run on many rows of a list."""

    name: str
    label: str  # the button: "Send invoices"
    noun: str  # what a row is: "invoice"
    rows: Callable[[list[int]], list[Row]]  # read a batch of rows (a constant number of queries)
    would: Callable[[Row, date], Outcome]  # the outcome the preview shows, from the row as read
    apply: Callable[[int, date], Outcome]  # do it to one row: lock, read fresh, check the same rule, act


@dataclass
class Preview:
    """What a bulk action would do: how many rows see each outcome, and the first rows as examples."""

    total: int
    counts: dict[str, int]
    samples: list[tuple[Row, Outcome]]

    @property
    def acting(self) -> int:
        """How many rows the action would change."""
        return sum(n for key, n in self.counts.items() if not key.startswith("skipped") and key != FAILED)


@dataclass
class Result:
    """What a bulk action did: rows per outcome, and each row that failed with its reason."""

    counts: dict[str, int]
    failures: list[dict]

    def job_counts(self) -> dict:
        """The counts as a job run records them (failures listed apart, as the run page shows them)."""
        counts = {key: n for key, n in self.counts.items() if key != FAILED}
        if self.failures:
            counts |= {FAILED_COUNT_KEY: len(self.failures), FAILURES_KEY: self.failures[:MAX_FAILURES]}
        return counts


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), READ_BATCH):
        yield ids[start:start + READ_BATCH]


def preview(action: BulkAction, ids: list[int], today: date, samples: int = SAMPLES) -> Preview:
    """Say what `action` would do to each row, without writing anything."""
    counts: Counter = Counter()
    shown: list[tuple[Row, Outcome]] = []
    for batch in _batches(ids):
        for row in action.rows(batch):
            outcome = action.would(row, today)
            counts[outcome.key] += 1
            if len(shown) < samples:
                shown.append((row, outcome))
    return Preview(total=sum(counts.values()), counts=dict(counts.most_common()), samples=shown)


def apply(action: BulkAction, ids: list[int], today: date) -> Result:
    """Run `action` on each row in turn, each in a savepoint; flushes, never commits (the edge does)."""
    counts: Counter = Counter()
    failures: list[dict] = []
    for batch in _batches(ids):
        rows = {row.id: row for row in action.rows(batch)}
        for row_id in batch:
            row = rows.get(row_id)
            if row is None:
                counts["skipped_gone"] += 1  # deleted since it was selected (a draft invoice)
                continue
            outcome = _apply_one(action, row, today)
            counts[outcome.key] += 1
            if outcome.key == FAILED:
                failures.append({"customer_id": row.customer_id, "step": action.name, "as_of": today.isoformat(),
                                 "error": row.label, "message": outcome.note, "row_id": row.id})
    return Result(counts=dict(counts.most_common()), failures=failures)


def _apply_one(action: BulkAction, row: Row, today: date) -> Outcome:
    try:
        with db.session.begin_nested():
            return action.apply(row.id, today)
    except AppError as exc:
        return Outcome(FAILED, exc.message)
    except Exception as exc:
        if is_transient(exc):
            raise  # a lost connection fails the whole batch, which is retried; nothing half-done is kept
        log.exception("bulk %s: row %s failed", action.name, row.id)
        cause = getattr(exc, "orig", None) or exc  # a database error's own words, not the wrapper's SQL
        return Outcome(FAILED, " ".join(f"{type(cause).__name__}: {cause}".split())[:300])

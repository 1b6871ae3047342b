"""Writing rows through the services a batch at a time, each batch in a savepoint: when every row of it passes (the
common case) it costs two statements, not two per row; when one fails, the batch is undone and run again row by row,
each row in its own savepoint, so that every failure is reported and only the failures are left out."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy.exc import DataError, IntegrityError

from isp_admin.errors import AppError
from isp_admin.extensions import db
from isp_admin.services.imports.report import REFUSED_BY_DATABASE, Report

BATCH_SIZE = 100


class _BatchFailed(Exception):
    """A row of the batch failed: undo the batch, then run its rows one by one."""


def write_rows(items: Sequence, write: Callable, report: Report, columns: dict[str, str], *,
               state: tuple[dict, ...] = (), failed: Callable | None = None) -> None:
    """Run `write(item)` for every item (each has a `number`, its row); record refusals on `report`.

    `state` holds dicts that `write` fills in (what earlier rows created): a batch run again restores them first.
    `failed(item)` is told of each row left out.
    """
    for start in range(0, len(items), BATCH_SIZE):
        batch = items[start:start + BATCH_SIZE]
        mark, saved = report.mark(), [dict(d) for d in state]
        try:
            with db.session.begin_nested():
                for item in batch:
                    try:
                        write(item)
                    except (AppError, DataError, IntegrityError) as exc:
                        raise _BatchFailed from exc
        except _BatchFailed:
            report.reset(mark)
            for kept, copy in zip(state, saved, strict=True):
                kept.clear()
                kept.update(copy)
        else:
            continue
        for item in batch:
            _write_one(item, write, report, columns, failed)


def _write_one(item, write: Callable, report: Report, columns: dict[str, str], failed: Callable | None) -> None:
    mark = report.mark()
    try:
        with db.session.begin_nested():
            write(item)
        return
    except AppError as exc:
        report.reset(mark)  # what the row counted before it was refused was undone with it
        report.refused(item.number, exc, columns)
    except (DataError, IntegrityError):  # a guard of the database's own; the savepoint undid the row
        report.reset(mark)
        report.error(item.number, None, REFUSED_BY_DATABASE)
    if failed is not None:
        failed(item)

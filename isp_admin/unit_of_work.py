"""The one commit point of every edge: pages, API, jobs and CLI commands run their action in a unit of work.

Services only flush. An edge runs an action with `unit_of_work()` (a block) or `commit_once()` (a call): it
commits once when the action ends, and rolls the whole action back when it raises. Side effects that must not
happen for work that was rolled back — forgetting a cached figure, queueing a job, sending mail — run after the
commit returns: either in the edge's code after the block, or registered by a service with
`services.platform.after_commit`, which the session runs on commit and drops on rollback. Domain errors are
mapped to answers once per edge (the web's `perform` and error pages, the API's envelope, the CLI's usage
errors, a job's failed run).

A few edges commit more than once on purpose, each commit a unit of its own: a fanned-out run counts each chunk
in with its work, delivery commits each email as it leaves (a sent email cannot be rolled back), and a recovery
sweep commits per run. They call `commit_step()`. Nothing else under isp_admin/ commits
(tests/test_unit_of_work_everywhere.py holds that).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.engine import Connection

from isp_admin.errors import AppError
from isp_admin.extensions import db

log = logging.getLogger(__name__)


def _roll_back_quietly() -> None:
    # The exception being raised is what the caller must see: a rollback on a connection that was cut would
    # otherwise replace it with its own error (and a lost database must reach the error handlers as itself).
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001
        log.warning("rollback after a failed action failed too", exc_info=True)


@contextmanager
def unit_of_work() -> Iterator[None]:
    """Run a block as one transaction: commit once when it ends, roll the whole of it back when it raises."""
    try:
        yield
    except BaseException:
        _roll_back_quietly()
        raise
    db.session.commit()


def commit_once(action: Callable, *args, keep: Callable[[Any], bool] | None = None, **kwargs):
    """Run `action(*args, **kwargs)` and commit once; roll back and re-raise when it raises.

    `keep` decides from the result whether there is anything to commit: a no-op must not commit what it
    touched on the way (it is rolled back instead).
    """
    try:
        result = action(*args, **kwargs)
    except AppError:
        db.session.rollback()  # whatever the action flushed before it was refused is thrown away
        raise
    except BaseException:
        _roll_back_quietly()
        raise
    if keep is None or keep(result):
        db.session.commit()
    else:
        db.session.rollback()
    return result


def commit_step() -> None:
    """Commit one step of an edge that commits step by step (a chunk, an email, a recovered run)."""
    db.session.commit()


@contextmanager
def separate_transaction() -> Iterator[Connection]:
    """A transaction on a connection of its own, committed when the block ends (the request's may be dead)."""
    with db.engine.begin() as connection:
        yield connection


def discard() -> None:
    """Roll back what a read-only action touched (a dry run, a probe) so that nothing of it is kept."""
    _roll_back_quietly()

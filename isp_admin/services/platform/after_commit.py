"""Side effects that belong after the edge's commit (DESIGN §1): cache forgetting, for now.

A service that forgets a cached figure before its transaction commits leaves a window in which a concurrent read
caches the old figure again, until its timeout. `forget_now_and_after_commit` forgets at once (the same session
then reads its own writes) and once more when the session's transaction commits; a rollback drops the second.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session

from isp_admin.extensions import db

log = logging.getLogger(__name__)
_KEY = "after_commit"


def forget_now_and_after_commit(forget: Callable[[], None]) -> None:
    """Run `forget` now and again after the current transaction commits (once, however often it is asked)."""
    forget()
    db.session.info.setdefault(_KEY, {})[forget] = None


def _run(session: Session) -> None:
    for forget in session.info.pop(_KEY, {}):
        try:
            forget()
        except Exception:  # noqa: BLE001  the commit stands; a cache that could not be told expires on its own
            log.warning("after-commit step %s failed", getattr(forget, "__name__", forget), exc_info=True)


def _drop(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:  # the whole transaction, not a savepoint
        session.info.pop(_KEY, None)


def register_after_commit() -> None:
    """Listen on every session for commits and rollbacks (once per process)."""
    if not event.contains(Session, "after_commit", _run):
        event.listen(Session, "after_commit", _run)
        event.listen(Session, "after_soft_rollback", _drop)

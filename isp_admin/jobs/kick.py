"""Queue the CoA sweep the moment a subscription's network state change commits (the minute sweep is the net).

Listens on every session: a flush that changed a watched column of a Subscription, or a bulk UPDATE of
subscriptions (the nightly run suspends set-based), marks the transaction; its commit queues the sweep. Kept apart
from the job module so building an app imports neither RQ nor pyrad.
"""
from __future__ import annotations

import logging

from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

from isp_admin.models import Subscription

log = logging.getLogger(__name__)
_FLAG = "network_kick"
_WATCHED = ("status", "suspension_reason", "plan_id", "pppoe_username", "static_ip")


def _mark_dirty_flush(session: Session, _context) -> None:
    from sqlalchemy import inspect

    for obj in session.dirty:
        if isinstance(obj, Subscription):
            state = inspect(obj)
            if any(state.attrs[name].history.has_changes() for name in _WATCHED):
                session.info[_FLAG] = True
                return


def _mark_bulk_update(orm_execute_state) -> None:
    if orm_execute_state.is_update and any(
            getattr(m, "class_", None) is Subscription for m in orm_execute_state.all_mappers):
        orm_execute_state.session.info[_FLAG] = True


def _kick_after_commit(session: Session) -> None:
    if not session.info.pop(_FLAG, False) or not current_app.config.get("NETWORK_KICK", True):
        return
    if not current_app.config.get("REDIS_URL"):
        return  # no queue in this set-up (a script on SQLite): the periodic sweep, where one runs, sends it
    try:
        from isp_admin.jobs.queue import get_queue

        # One waiting sweep is enough however many changes committed: a fixed id collapses the repeats.
        get_queue().enqueue("isp_admin.jobs.network.dispatch_network", job_id=f"{get_queue().name}-network-kick",
                            job_timeout=300, result_ttl=0, failure_ttl=86400)
    except Exception:  # noqa: BLE001  the commit stands; the minute sweep sends it instead
        log.warning("could not queue the network sweep; the periodic sweep will", exc_info=True)


def _forget(session: Session, previous_transaction) -> None:
    if previous_transaction.parent is None:
        session.info.pop(_FLAG, None)


def register_network_kick(app: Flask) -> None:  # noqa: ARG001  (one listener per process, read per commit)
    """After a commit that changed a subscription's network state, queue the CoA sweep at once (NETWORK_KICK)."""
    if not event.contains(Session, "after_flush", _mark_dirty_flush):
        event.listen(Session, "after_flush", _mark_dirty_flush)
        event.listen(Session, "do_orm_execute", _mark_bulk_update)
        event.listen(Session, "after_commit", _kick_after_commit)
        event.listen(Session, "after_soft_rollback", _forget)

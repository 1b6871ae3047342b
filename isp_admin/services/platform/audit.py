"""Write audit events; the acting user, token or job comes from a context set at the edge."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import inspect

from isp_admin.extensions import db
from isp_admin.models import AuditEvent
from isp_admin.models.base import utcnow
from isp_admin.services.platform.bulk import bulk_insert


@dataclass(frozen=True)
class Actor:
    """Who is acting: a staff user, an API token, a customer in the portal (by customer id), or the system."""

    type: str
    id: int | None
    label: str
    ip: str | None = None


SYSTEM = Actor("system", None, "system")
_actor_provider: ContextVar[Callable[[], Actor]] = ContextVar("actor_provider", default=lambda: SYSTEM)


def set_actor_provider(provider: Callable[[], Actor]) -> None:
    """Install the function that names the current actor (the web layer installs one per request)."""
    _actor_provider.set(provider)


@contextmanager
def acting_as(actor: Actor) -> Iterator[None]:
    """Attribute the writes inside the block to `actor` (CLI commands, jobs, tests)."""
    token = _actor_provider.set(lambda: actor)
    try:
        yield
    finally:
        _actor_provider.reset(token)


def current_actor() -> Actor:
    """Return the actor the current writes are attributed to."""
    return _actor_provider.get()()


def _jsonable(value):
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def snapshot(obj, exclude: tuple[str, ...] = ("password_hash", "search_text", "created_at", "updated_at")) -> dict:
    """Return the persisted column values of a model instance as JSON-safe data."""
    mapper = inspect(obj).mapper
    return {
        attr.key: _jsonable(getattr(obj, attr.key))
        for attr in mapper.column_attrs
        if attr.key not in exclude
    }


def changes(before: dict, after: dict) -> tuple[dict, dict]:
    """Reduce two snapshots to the fields that differ."""
    keys = [k for k in after if before.get(k) != after.get(k)]
    return {k: before.get(k) for k in keys}, {k: after[k] for k in keys}


def record(action: str, entity, *, before: dict | None = None, after: dict | None = None,
           customer_id: int | None = None) -> AuditEvent:
    """Add one audit event for `entity` to the current transaction."""
    actor = current_actor()
    event = AuditEvent(
        actor_type=actor.type,
        actor_id=actor.id,
        actor_label=actor.label,
        action=action,
        entity_type=entity.__tablename__,
        entity_id=entity.id,
        customer_id=customer_id,
        before=before,
        after=after,
        ip=actor.ip,
    )
    db.session.add(event)
    return event


def record_many(action: str, entity_type: str, rows: Iterable[tuple], *, before: dict | None = None,
                after: dict | None = None) -> None:
    """Add one audit event per (entity_id, customer_id[, after]) row to the current transaction, in one INSERT."""
    actor, now = current_actor(), utcnow()
    # A row's own third item, when given, replaces the shared `after` (each invoice issued has its own number).
    events = [dict(at=now, actor_type=actor.type, actor_id=actor.id, actor_label=actor.label, action=action,
                   entity_type=entity_type, entity_id=row[0], customer_id=row[1], before=before,
                   after=row[2] if len(row) > 2 else after, ip=actor.ip) for row in rows]
    bulk_insert(AuditEvent.__table__, events, json_columns=("before", "after"))


def entity_history(entity_type: str, entity_id: int, limit: int = 50) -> list[AuditEvent]:
    """Return the newest audit events about one record (served by ix_audit_events_entity)."""
    from sqlalchemy import select

    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.entity_type == entity_type, AuditEvent.entity_id == entity_id)
        .order_by(AuditEvent.id.desc()).limit(limit)))

"""Staff resolving a provider notification that made no payment (unmatched, held): what they did, on record."""
from __future__ import annotations

from isp_admin.errors import BusinessRuleViolation, NotFound
from isp_admin.extensions import db
from isp_admin.models import ProviderEvent
from isp_admin.services.payments.monitoring import NEEDS_A_PERSON
from isp_admin.services.platform import audit
from isp_admin.services.platform.bounds import check_text
from isp_admin.services.platform.clock import utcnow


def resolve_event(event_id: int, resolution: str) -> ProviderEvent:
    """Mark an unmatched or held notification resolved with what was done (recorded by hand, refunded…)."""
    resolution = check_text("resolution", resolution, required=True)
    # No money moves here, so no customer lock: a row lock on the event makes a double click resolve once.
    event = db.session.get(ProviderEvent, event_id, with_for_update=True, populate_existing=True)
    if event is None:
        raise NotFound("No such provider notification.")
    if event.outcome not in NEEDS_A_PERSON:
        raise BusinessRuleViolation("Only unmatched or held notifications need resolving.")
    if event.resolved_at is not None:
        raise BusinessRuleViolation(f"Already resolved by {event.resolved_by}.")
    actor = audit.current_actor()
    event.resolved_at, event.resolved_by, event.resolution = utcnow(), actor.label, resolution
    audit.record("provider_event.resolve", event, before={"resolved": False},
                 after={"resolved": True, "resolution": resolution})
    return event

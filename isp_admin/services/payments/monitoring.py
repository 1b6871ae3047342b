"""Figures for /metrics and the alerts: attempts waiting on a provider, and notifications waiting on a person."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import PaymentAttempt, ProviderEvent
from isp_admin.services.platform.clock import utcnow

STUCK_AFTER = timedelta(hours=1)  # the sweep asks every 10 minutes: an hour unanswered means it is not working
NEEDS_A_PERSON = ("unmatched", "held")


def attempt_counts() -> dict[str, int]:
    """Pending attempts, and those pending for over an hour (the sweep should have settled them)."""
    pending, stuck = db.session.execute(
        select(func.count(), func.count().filter(PaymentAttempt.created_at < utcnow() - STUCK_AFTER))
        .where(PaymentAttempt.status == "pending")).one()
    return {"pending": pending, "stuck": stuck}


def events_needing_attention() -> dict[str, int]:
    """Provider notifications no payment came of that nobody has resolved yet, by outcome (unmatched, held)."""
    rows = dict(db.session.execute(select(ProviderEvent.outcome, func.count())
                                   .where(ProviderEvent.outcome.in_(NEEDS_A_PERSON),
                                          ProviderEvent.resolved_at.is_(None))
                                   .group_by(ProviderEvent.outcome)).all())
    return {outcome: rows.get(outcome, 0) for outcome in NEEDS_A_PERSON}

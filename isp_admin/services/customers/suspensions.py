"""Suspension periods: the days a subscription actually spent suspended, and billing when service comes back.

DESIGN §3: a period that starts while a subscription is suspended is not billed (BILL_WHILE_SUSPENDED off); a
period that started while it was active is billed, however late the resume. These rows are the record of which
days were which, for the resume and for reconcile's coverage check.
"""
from __future__ import annotations

from datetime import date, timedelta

from flask import current_app
from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import Subscription, SuspensionPeriod
from isp_admin.services.platform.bulk import bulk_insert


def open_suspension(sub: Subscription, reason: str, day: date) -> SuspensionPeriod:
    """Record that `sub` is suspended from `day` (the partial unique index allows one open period)."""
    period = SuspensionPeriod(subscription_id=sub.id, customer_id=sub.customer_id, reason=reason, started_on=day)
    db.session.add(period)
    db.session.flush()
    return period


def open_suspensions(rows: list[tuple[int, int]], reason: str, day: date) -> None:
    """Record many suspensions from `day` at once: (subscription_id, customer_id) pairs."""
    bulk_insert(SuspensionPeriod.__table__, [dict(subscription_id=sub_id, customer_id=customer_id, reason=reason,
                                                  started_on=day, ended_on=None) for sub_id, customer_id in rows])


def close_suspension(subscription_id: int, day: date) -> SuspensionPeriod | None:
    """End the subscription's open suspension on `day`; return it (None when none was recorded)."""
    period = db.session.scalar(select(SuspensionPeriod).where(
        SuspensionPeriod.subscription_id == subscription_id, SuspensionPeriod.ended_on.is_(None))
        .execution_options(populate_existing=True))
    if period is not None:
        period.ended_on = max(day, period.started_on)
        db.session.flush()
    return period


def restart_billing(sub: Subscription, day: date) -> None:
    """Billing after a suspension ends on `day` (the subscription is active again, under the customer's lock).

    Periods that began before the suspension were due while active: they are billed now, in full. Periods that
    began while suspended are skipped: billing restarts on `day`, prorated to the end of its period.
    """
    period = close_suspension(sub.id, day)
    if current_app.config.get("BILL_WHILE_SUSPENDED"):
        return  # suspended periods were billed as they came; nothing was skipped
    # Without a record (a row written before suspension periods existed) the old rule stands: skip to `day`.
    suspended_from = period.started_on if period is not None else sub.next_bill_date
    if sub.next_bill_date < suspended_from:
        from isp_admin.services.billing.run import plan_invoices, write_invoices

        db.session.flush()  # the run's query must see the subscription active
        plan = plan_invoices(suspended_from - timedelta(days=1), subscription_id=sub.id, lock=True)
        write_invoices(plan, day)
        db.session.expire(sub, ["next_bill_date", "updated_at"])
    if sub.next_bill_date < day:
        sub.next_bill_date = day

"""What staff read about payments online and the portal: attempts in flight, notifications waiting on a person,
a payment's provider events, a customer's portal access, and the plan changes customers asked for.
Column-loaded rows, each list one bounded statement."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import literal, select, true

from isp_admin.extensions import db
from isp_admin.models import (
    Customer,
    Invoice,
    PaymentAttempt,
    Plan,
    PlanChangeRequest,
    PortalAccount,
    ProviderEvent,
    Subscription,
)
from isp_admin.services.payments.monitoring import NEEDS_A_PERSON
from isp_admin.services.platform.clock import utcnow

IN_FLIGHT_LIMIT = 50  # per list; the page says when there are more (the oldest pending come first)
RECENT_FAILURES = timedelta(days=7)
EVENTS_PER_PAYMENT = 50
PENDING_REQUESTS_PER_CUSTOMER = 20


@dataclass
class Listing:
    """At most `limit` rows of one list, and whether more exist beyond them."""

    rows: list
    more: bool


@dataclass
class InFlight:
    """The payments-in-flight page: pending attempts, recent failures, and notifications needing a person."""

    as_of: datetime
    pending: Listing
    failed: Listing
    events: Listing


def _limited(stmt, limit: int) -> Listing:
    rows = db.session.execute(stmt.limit(limit + 1)).all()  # one row more than shown says whether there is more
    return Listing(rows[:limit], len(rows) > limit)


def _attempts(*conditions):
    a, c, i = PaymentAttempt.__table__.c, Customer.__table__.c, Invoice.__table__.c
    return (select(a.id, a.public_id, a.provider, a.provider_ref, a.amount_cents, a.currency, a.status, a.phone,
                   a.failure_reason, a.created_at, a.updated_at, a.checked_at, a.checks, a.payment_id,
                   a.customer_id, c.name.label("customer_name"), c.account_number, a.invoice_id,
                   i.number.label("invoice_number"))
            .join(Customer.__table__, c.id == a.customer_id)
            .outerjoin(Invoice.__table__, i.id == a.invoice_id)
            .where(*conditions))


def in_flight(limit: int = IN_FLIGHT_LIMIT) -> InFlight:
    """Attempts still pending (oldest first), failed or expired in the last week, and unresolved notifications
    that made no payment (unmatched, held): three statements, whatever the table sizes."""
    now = utcnow()
    a, e, c = PaymentAttempt.__table__.c, ProviderEvent.__table__.c, Customer.__table__.c
    pending = _limited(_attempts(a.status == "pending").order_by(a.created_at, a.id), limit)
    failed = _limited(_attempts(a.status.in_(("failed", "expired")), a.updated_at >= now - RECENT_FAILURES)
                      .order_by(a.updated_at.desc(), a.id.desc()), limit)
    events = _limited(
        select(e.id, e.provider, e.event_id, e.event_type, e.outcome, e.detail, e.amount_cents, e.currency,
               e.received_at, e.attempt_id, a.provider_ref, a.customer_id, c.name.label("customer_name"),
               c.account_number)
        .outerjoin(PaymentAttempt.__table__, a.id == e.attempt_id)
        .outerjoin(Customer.__table__, c.id == a.customer_id)
        .where(e.outcome.in_(NEEDS_A_PERSON), e.resolved_at.is_(None))
        .order_by(e.received_at, e.id), limit)
    return InFlight(now, pending, failed, events)


def payment_events(payment_id: int, limit: int = EVENTS_PER_PAYMENT) -> list:
    """The provider notifications about a payment (its attempt's too: a failure before the success), oldest first."""
    e = ProviderEvent.__table__.c
    attempt_id = select(PaymentAttempt.id).where(PaymentAttempt.payment_id == payment_id).scalar_subquery()
    return db.session.execute(
        select(e.id, e.provider, e.event_id, e.event_type, e.outcome, e.detail, e.received_at, e.resolved_at,
               e.resolution)
        .where((e.payment_id == payment_id) | (e.attempt_id == attempt_id))
        .order_by(e.received_at, e.id).limit(limit)).all()


@dataclass
class PortalAccess:
    """The customer page's portal card: their sign-in (if any) and the plan changes they asked for."""

    has_account: bool
    password_set_at: datetime | None
    last_login_at: datetime | None
    pending_requests: list


def portal_access(customer_id: int) -> PortalAccess:
    """A customer's portal sign-in and pending plan-change requests, in one statement (the page's query budget)."""
    r, s, p, acc = (PlanChangeRequest.__table__.c, Subscription.__table__.c, Plan.__table__.c,
                    PortalAccount.__table__.c)
    current = Plan.__table__.alias("current_plan")
    account = select(acc.id, acc.password_set_at, acc.last_login_at).where(acc.customer_id == customer_id).subquery()
    requests = (select(r.id, r.subscription_id, r.note, r.requested_at, p.name.label("plan_name"),
                       current.c.name.label("current_plan_name"))
                .join(Subscription.__table__, s.id == r.subscription_id)
                .join(Plan.__table__, p.id == r.plan_id)
                .join(current, current.c.id == s.plan_id)
                .where(r.customer_id == customer_id, r.status == "pending")
                .order_by(r.requested_at, r.id).limit(PENDING_REQUESTS_PER_CUSTOMER).subquery())
    # The account (one row at most) beside each request; a LEFT JOIN from a one-row anchor keeps the account when
    # there is no request and the requests when there is no account.
    anchor = select(literal(1).label("one")).subquery()
    rows = db.session.execute(
        select(account.c.id.label("account_id"), account.c.password_set_at, account.c.last_login_at,
               requests.c.id, requests.c.subscription_id, requests.c.note, requests.c.requested_at,
               requests.c.plan_name, requests.c.current_plan_name)
        .select_from(anchor).outerjoin(account, true()).outerjoin(requests, true())
        .order_by(requests.c.requested_at, requests.c.id)).all()
    first = rows[0]
    return PortalAccess(has_account=first.account_id is not None, password_set_at=first.password_set_at,
                        last_login_at=first.last_login_at, pending_requests=[row for row in rows if row.id is not None])


PLAN_CHANGE_QUEUE_LIMIT = 100


def pending_plan_changes(limit: int = PLAN_CHANGE_QUEUE_LIMIT) -> Listing:
    """Plan changes customers asked for in the portal and staff have not decided, oldest first: one statement."""
    r, s, p, c = (PlanChangeRequest.__table__.c, Subscription.__table__.c, Plan.__table__.c,
                  Customer.__table__.c)
    current = Plan.__table__.alias("current_plan")
    return _limited(
        select(r.id, r.customer_id, c.name.label("customer_name"), c.account_number, r.subscription_id,
               s.status.label("subscription_status"), s.pppoe_username, current.c.name.label("current_plan_name"),
               p.name.label("plan_name"), p.active.label("plan_active"), r.note, r.requested_at)
        .join(Customer.__table__, c.id == r.customer_id)
        .join(Subscription.__table__, s.id == r.subscription_id)
        .join(Plan.__table__, p.id == r.plan_id)
        .join(current, current.c.id == s.plan_id)
        .where(r.status == "pending")
        .order_by(r.requested_at, r.id), limit)

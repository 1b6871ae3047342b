"""Plan changes a customer asks for in the portal, and staff's decision on them.

Customers never change a plan themselves: a request waits for staff, whose approval runs the same
customers.subscriptions.change_plan that the staff subscription page runs (credit the old plan's unused days,
charge the rest of the period on the new one).
"""
from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import BusinessRuleViolation, Conflict, Forbidden, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import Plan, Subscription
from isp_admin.models.portal import PLAN_CHANGE_STATUSES, PlanChangeRequest
from isp_admin.services.billing.ledger import lock_customer
from isp_admin.services.customers.subscriptions import change_plan_documents
from isp_admin.services.platform import audit
from isp_admin.services.platform.clock import utcnow
from isp_admin.services.platform.pagination import Page, keyset_by_id

MAX_NOTE = 500
PENDING_LIMIT = 100
MAX_PAGE = 100


def _note(note: str | None) -> str | None:
    note = (note or "").strip()
    if len(note) > MAX_NOTE or "\x00" in note:
        raise Invalid(f"Keep the note under {MAX_NOTE} characters.", {"note": f"At most {MAX_NOTE} characters."})
    return note or None


def request_change(customer_id: int, subscription_id: int, plan_id: int, note: str | None) -> PlanChangeRequest:
    """Ask staff to move one of the customer's live subscriptions to another active plan (one pending at a time)."""
    note = _note(note)
    lock_customer(customer_id)
    sub = db.session.get(Subscription, subscription_id)
    if sub is None or sub.customer_id != customer_id:
        raise NotFound("No such subscription.")
    if sub.status == "cancelled":
        raise BusinessRuleViolation("A cancelled subscription cannot change plan.")
    plan = db.session.get(Plan, plan_id)
    if plan is None or not plan.active:
        raise Invalid("Choose one of the plans offered.", {"plan_id": "Not an offered plan."})
    if plan.id == sub.plan_id:
        raise Invalid("The subscription is already on this plan.", {"plan_id": "Same plan."})
    pending = db.session.scalar(select(PlanChangeRequest.id).where(
        PlanChangeRequest.subscription_id == sub.id, PlanChangeRequest.status == "pending"))
    if pending is not None:
        raise Conflict("A request for this subscription is already waiting; withdraw it to ask for another.")
    request = PlanChangeRequest(customer_id=customer_id, subscription_id=sub.id, plan_id=plan.id, note=note)
    try:
        with db.session.begin_nested():  # the partial unique index is the last word on two concurrent requests
            db.session.add(request)
            db.session.flush()
    except IntegrityError:
        raise Conflict("A request for this subscription is already waiting.") from None
    audit.record("plan_change_request.create", request, after={"subscription_id": sub.id, "from_plan_id": sub.plan_id,
                                                               "plan_id": plan.id}, customer_id=customer_id)
    return request


def _locked_request(request_id: int) -> PlanChangeRequest:
    customer_id = db.session.scalar(select(PlanChangeRequest.customer_id).where(PlanChangeRequest.id == request_id))
    if customer_id is None:
        raise NotFound("No such request.")
    lock_customer(customer_id)
    request = db.session.scalar(select(PlanChangeRequest).where(PlanChangeRequest.id == request_id)
                                .execution_options(populate_existing=True))
    if request.status != "pending":
        raise Conflict(f"This request was already {request.status}.")
    return request


def _decide(request: PlanChangeRequest, status: str, note: str | None, **extra) -> PlanChangeRequest:
    request.status, request.decided_at = status, utcnow()
    request.decided_by, request.decision_note = audit.current_actor().label[:254], note
    db.session.flush()
    audit.record(f"plan_change_request.{status}", request, before={"status": "pending"},
                 after={"status": status, "note": note, **extra}, customer_id=request.customer_id)
    return request


def withdraw(customer_id: int, request_id: int) -> PlanChangeRequest:
    """Withdraw one of the customer's own pending requests."""
    owner = db.session.scalar(select(PlanChangeRequest.customer_id).where(PlanChangeRequest.id == request_id))
    if owner is None or owner != customer_id:
        raise NotFound("No such request.")
    return _decide(_locked_request(request_id), "withdrawn", None)


def approve(request_id: int, today: date, note: str | None = None, *, may_bill: bool = True) -> PlanChangeRequest:
    """Approve a pending request: the subscription moves to the plan asked for, today. Without `may_bill` (support
    staff), a change that issues an invoice or a credit note is refused, as on the subscription page."""
    note = _note(note)
    request = _locked_request(request_id)
    outcome = change_plan_documents(request.subscription_id, request.plan_id)
    if outcome.documents and not may_bill:
        issued = " and ".join("an invoice" if d.kind == "invoice" else "a credit note" for d in outcome.documents)
        raise Forbidden(f"Approving this request issues {issued}: ask billing staff to approve it.")
    request = db.session.scalar(select(PlanChangeRequest).where(PlanChangeRequest.id == request_id)
                                .execution_options(populate_existing=True))
    return _decide(request, "approved", note, changed_on=today.isoformat())


def reject(request_id: int, note: str | None = None) -> PlanChangeRequest:
    """Reject a pending request, with a note the customer sees."""
    return _decide(_locked_request(request_id), "rejected", _note(note))


def customer_requests(customer_id: int, limit: int = 20) -> list:
    """The customer's latest requests with the plan names, newest first."""
    r, p = PlanChangeRequest.__table__.c, Plan.__table__.c
    return db.session.execute(
        select(r.id, r.subscription_id, r.status, r.note, r.requested_at, r.decided_at, r.decision_note,
               p.name.label("plan_name"))
        .join(Plan.__table__, p.id == r.plan_id).where(r.customer_id == customer_id)
        .order_by(r.id.desc()).limit(limit)).all()


def pending_requests(limit: int = PENDING_LIMIT) -> list[PlanChangeRequest]:
    """Pending requests, oldest first, at most `limit`."""
    return list(db.session.scalars(select(PlanChangeRequest).where(PlanChangeRequest.status == "pending")
                                   .order_by(PlanChangeRequest.requested_at, PlanChangeRequest.id)
                                   .limit(min(max(limit, 1), PENDING_LIMIT))))


def list_requests(status: str | None = None, *, size: int = 50, after: str | None = None,
                  before: str | None = None) -> Page:
    """One page of requests (newest first), optionally of one status."""
    if status is not None and status not in PLAN_CHANGE_STATUSES:
        raise Invalid("Unknown status.", {"status": f"One of {', '.join(PLAN_CHANGE_STATUSES)}."})
    r = PlanChangeRequest.__table__.c
    stmt = select(r.id, r.customer_id, r.subscription_id, r.plan_id, r.status, r.note, r.requested_at,
                  r.decided_at, r.decided_by, r.decision_note)
    if status is not None:
        stmt = stmt.where(r.status == status)
    return keyset_by_id(stmt, r.id, min(max(size, 1), MAX_PAGE), after, before)

"""Plan change requests: a customer asks, a double request makes one row, they withdraw, staff approve or reject."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import Conflict, NotFound
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Subscription
from isp_admin.models.portal import PlanChangeRequest
from isp_admin.services.platform.audit import Actor, acting_as
from isp_admin.services.platform.clock import today
from isp_admin.services.portal import plan_changes
from isp_admin.unit_of_work import commit_once
from tests.factories import PlanFactory, SubscriptionFactory
from tests.portal.conftest import portal_customer, portal_sign_in


@pytest.fixture
def subscriber(app):
    customer, _ = portal_customer()
    start = today() - timedelta(days=40)
    sub = SubscriptionFactory(customer=customer, start_date=start, billing_day=start.day if start.day <= 28 else 1,
                              next_bill_date=today() + timedelta(days=5))
    return customer, sub.id, PlanFactory(name="Fibre 500").id


def _requests(customer_id: int) -> list[PlanChangeRequest]:
    db.session.rollback()
    return list(db.session.scalars(select(PlanChangeRequest).where(PlanChangeRequest.customer_id == customer_id)))


def test_a_customer_asks_and_a_double_click_makes_one_request(app, client, subscriber):
    customer, sub_id, plan_id = subscriber
    portal_sign_in(client, customer.account_number)
    form = {"subscription_id": sub_id, "plan_id": plan_id, "note": "Working from home now"}
    assert client.post("/portal/plan-change", data=form).status_code == 302
    again = client.post("/portal/plan-change", data=form)
    assert again.status_code == 422 and "already waiting" in again.get_data(as_text=True)
    [request] = _requests(customer.id)
    assert (request.status, request.plan_id, request.note) == ("pending", plan_id, "Working from home now")
    page = client.get("/portal/plan-change").get_data(as_text=True)
    assert "Fibre 500" in page and "Withdraw" in page


def test_the_unique_index_refuses_a_second_pending_request_as_a_conflict(app, subscriber):
    customer, sub_id, plan_id = subscriber
    commit_once(plan_changes.request_change, customer.id, sub_id, plan_id, None)
    # Past the service's own check (as a concurrent request would be): the partial unique index answers.
    db.session.add(PlanChangeRequest(customer_id=customer.id, subscription_id=sub_id, plan_id=plan_id))
    with pytest.raises(IntegrityError, match="uq_plan_change_requests_pending"):
        db.session.flush()
    db.session.rollback()
    with pytest.raises(Conflict):
        commit_once(plan_changes.request_change, customer.id, sub_id, plan_id, None)
    assert len(_requests(customer.id)) == 1


def test_same_plan_or_retired_plan_is_refused(app, client, subscriber):
    customer, sub_id, _ = subscriber
    current = db.session.get(Subscription, sub_id).plan_id
    retired = PlanFactory(active=False).id
    portal_sign_in(client, customer.account_number)
    for plan in (current, retired):
        answer = client.post("/portal/plan-change", data={"subscription_id": sub_id, "plan_id": plan})
        assert answer.status_code == 422
    assert _requests(customer.id) == []


def test_withdraw(app, client, subscriber):
    customer, sub_id, plan_id = subscriber
    request = commit_once(plan_changes.request_change, customer.id, sub_id, plan_id, "")
    portal_sign_in(client, customer.account_number)
    assert client.post(f"/portal/plan-change/{request.id}/withdraw").status_code == 302
    [row] = _requests(customer.id)
    assert row.status == "withdrawn" and row.decided_at is not None
    again = client.post(f"/portal/plan-change/{request.id}/withdraw")
    assert again.status_code == 302  # nothing left to withdraw: said, not crashed
    assert "already withdrawn" in client.get("/portal/plan-change").get_data(as_text=True)


def test_staff_approve_and_the_plan_changes(app, subscriber):
    customer, sub_id, plan_id = subscriber
    request = commit_once(plan_changes.request_change, customer.id, sub_id, plan_id, "please")
    assert [r.id for r in plan_changes.pending_requests(10)] == [request.id]
    with acting_as(Actor("user", 1, "boss@isp.example")):
        commit_once(plan_changes.approve, request.id, today(), note="Enjoy")
    db.session.rollback()
    assert db.session.get(Subscription, sub_id).plan_id == plan_id
    [row] = _requests(customer.id)
    assert (row.status, row.decided_by, row.decision_note) == ("approved", "boss@isp.example", "Enjoy")
    assert plan_changes.pending_requests(10) == []
    with pytest.raises(Conflict):
        commit_once(plan_changes.approve, request.id, today())
    assert db.session.scalar(select(func.count()).select_from(AuditEvent).where(
        AuditEvent.action == "plan_change_request.approved")) == 1


def test_staff_reject_and_the_customer_sees_why(app, client, subscriber):
    customer, sub_id, plan_id = subscriber
    current = db.session.get(Subscription, sub_id).plan_id
    request = commit_once(plan_changes.request_change, customer.id, sub_id, plan_id, None)
    commit_once(plan_changes.reject, request.id, note="Not available in your area yet")
    db.session.rollback()
    assert db.session.get(Subscription, sub_id).plan_id == current
    portal_sign_in(client, customer.account_number)
    assert "Not available in your area yet" in client.get("/portal/plan-change").get_data(as_text=True)
    page = plan_changes.list_requests("rejected", size=10)
    assert [row.id for row in page.rows] == [request.id]


def test_another_customers_request_cannot_be_withdrawn(app, subscriber):
    customer, sub_id, plan_id = subscriber
    other, _ = portal_customer()
    request = commit_once(plan_changes.request_change, customer.id, sub_id, plan_id, None)
    with pytest.raises(NotFound):
        commit_once(plan_changes.withdraw, other.id, request.id)
    assert _requests(customer.id)[0].status == "pending"

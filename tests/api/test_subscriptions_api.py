"""/api/subscriptions/: add, read, change network ids, change plan, suspend, resume and cancel over HTTP."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CreditNote, Customer, Invoice, InvoiceLine, Subscription
from isp_admin.services.platform.clock import today
from tests.api.helpers import assert_error, assert_ok, bearer
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory


@pytest.fixture
def writer():
    """Headers of a support user's token with the read and write scopes."""
    return bearer("support", "read,write")


def sub_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Subscription))


def actions(entity_id: int) -> list[str]:
    return list(db.session.scalars(select(AuditEvent.action).where(
        AuditEvent.entity_type == "subscriptions", AuditEvent.entity_id == entity_id).order_by(AuditEvent.id)))


def add(client, headers, **values):
    return client.post("/api/subscriptions/", json=values, headers=headers)


def test_a_subscription_starting_today_is_active_and_answers_201_with_its_location(client, writer):
    customer, plan = CustomerFactory(), PlanFactory()
    response = add(client, writer, customer_id=customer.id, plan_id=plan.id, pppoe_username="acme.farm",
                   static_ip="10.0.0.7", cpe_mac="00-1a-2b-3c-4d-5e")
    data = assert_ok(response, 201)
    assert response.headers["Location"] == f"/api/subscriptions/{data['id']}/"
    assert data["status"] == "active" and data["start_date"] == today().isoformat()
    assert data["billing_day"] == today().day and data["next_bill_date"] == today().isoformat()
    assert data["cpe_mac"] == "00:1A:2B:3C:4D:5E" and data["price_override_cents"] is None
    stored = db.session.get(Subscription, data["id"])
    assert (stored.customer_id, stored.plan_id, stored.status) == (customer.id, plan.id, "active")
    assert actions(stored.id) == ["subscription.create"]
    assert client.get(response.headers["Location"], headers=writer).get_json()["data"] == data


def test_a_subscription_starting_later_is_pending(client, writer):
    customer, plan = CustomerFactory(), PlanFactory()
    start = today() + timedelta(days=10)
    data = assert_ok(add(client, writer, customer_id=customer.id, plan_id=plan.id, start_date=start.isoformat(),
                         billing_day=1, price_override_cents=2500), 201)
    assert (data["status"], data["start_date"], data["billing_day"]) == ("pending", start.isoformat(), 1)
    assert data["price_override_cents"] == 2500
    assert db.session.get(Subscription, data["id"]).status == "pending"


def test_a_duplicate_pppoe_login_or_ip_is_a_409_conflict(client, writer):
    SubscriptionFactory(pppoe_username="taken", static_ip="10.1.1.1")
    customer, plan = CustomerFactory(), PlanFactory()
    body = assert_error(add(client, writer, customer_id=customer.id, plan_id=plan.id, pppoe_username="taken"),
                        409, "CONFLICT")
    assert set(body["error"]["details"]) == {"pppoe_username"}
    body = assert_error(add(client, writer, customer_id=customer.id, plan_id=plan.id, static_ip="10.1.1.1"),
                        409, "CONFLICT")
    assert set(body["error"]["details"]) == {"static_ip"}
    assert sub_count() == 1


def test_a_cancelled_subscriptions_login_may_be_reused(client, writer):
    SubscriptionFactory(pppoe_username="freed", status="cancelled", end_date=today())
    customer, plan = CustomerFactory(), PlanFactory()
    assert_ok(add(client, writer, customer_id=customer.id, plan_id=plan.id, pppoe_username="freed"), 201)


def test_invalid_network_ids_are_field_errors(client, writer):
    customer, plan = CustomerFactory(), PlanFactory()
    body = assert_error(add(client, writer, customer_id=customer.id, plan_id=plan.id, pppoe_username="has space",
                            static_ip="999.1.1.1", cpe_mac="nope"), 422, "VALIDATION_ERROR")
    assert set(body["error"]["details"]) == {"pppoe_username", "static_ip", "cpe_mac"}
    assert sub_count() == 0


def test_adding_refuses_a_closed_customer_a_retired_plan_and_unknown_ids(client, writer):
    closed, plan, retired = CustomerFactory(status="closed"), PlanFactory(), PlanFactory(active=False)
    body = assert_error(add(client, writer, customer_id=closed.id, plan_id=plan.id), 422, "BUSINESS_RULE_VIOLATION")
    assert "closed" in body["message"]
    customer = CustomerFactory()
    body = assert_error(add(client, writer, customer_id=customer.id, plan_id=retired.id), 422,
                        "BUSINESS_RULE_VIOLATION")
    assert "plan_id" in body["error"]["details"]
    assert_error(add(client, writer, customer_id=customer.id, plan_id=999_999), 404, "NOT_FOUND")
    assert_error(add(client, writer, customer_id=999_999, plan_id=plan.id), 404, "NOT_FOUND")
    body = assert_error(add(client, writer, customer_id=2**63, plan_id=plan.id), 422, "VALIDATION_ERROR")
    assert "customer_id" in body["error"]["details"]
    body = assert_error(add(client, writer, plan_id=plan.id, status="active", billing_day=32), 422,
                        "VALIDATION_ERROR")
    assert {"customer_id", "status", "billing_day"} <= set(body["error"]["details"])
    assert sub_count() == 0


def test_patch_changes_network_ids_and_keeps_the_rest(client, writer):
    sub = SubscriptionFactory(pppoe_username="old.login", static_ip="10.2.2.2", cpe_mac="00:00:00:00:00:01")
    data = assert_ok(client.patch(f"/api/subscriptions/{sub.id}/", json={"pppoe_username": "new.login"},
                                  headers=writer))
    assert (data["pppoe_username"], data["static_ip"], data["cpe_mac"]) == ("new.login", "10.2.2.2",
                                                                           "00:00:00:00:00:01")
    assert db.session.get(Subscription, sub.id).pppoe_username == "new.login"
    other = SubscriptionFactory(pppoe_username="busy")
    body = assert_error(client.patch(f"/api/subscriptions/{sub.id}/", json={"pppoe_username": "busy"},
                                     headers=writer), 409, "CONFLICT")
    assert "pppoe_username" in body["error"]["details"]
    body = assert_error(client.patch(f"/api/subscriptions/{other.id}/", json={"status": "cancelled"},
                                     headers=writer), 422, "VALIDATION_ERROR")
    assert "status" in body["error"]["details"]
    assert db.session.get(Subscription, other.id).status == "active"


def test_change_plan_moves_an_unbilled_subscription_at_once(client, writer):
    sub = SubscriptionFactory()
    faster = PlanFactory(monthly_price_cents=9900)
    data = assert_ok(client.post(f"/api/subscriptions/{sub.id}/change-plan/", json={"plan_id": faster.id},
                                 headers=writer))
    assert data["plan_id"] == faster.id
    assert db.session.get(Subscription, sub.id).plan_id == faster.id
    assert actions(sub.id)[-1] == "subscription.change_plan"
    assert db.session.scalar(select(func.count()).select_from(Invoice)) == 0  # nothing billed, nothing to adjust


def test_change_plan_mid_period_credits_the_old_plan_and_charges_the_new(client, writer):
    customer, slow = CustomerFactory(), PlanFactory(monthly_price_cents=3000, tax_rate_bp=0)
    start = today() - timedelta(days=3)
    sub_id = assert_ok(add(client, writer, customer_id=customer.id, plan_id=slow.id, start_date=start.isoformat()),
                       201)["id"]
    billing = bearer("billing", "billing")
    assert client.post("/api/billing/generate-invoice/", json={"customer_id": customer.id},
                       headers=billing).status_code == 201
    fast = PlanFactory(monthly_price_cents=6000, tax_rate_bp=0)
    # Support's token may not issue the invoice and credit note this change makes (as on the subscription page).
    refused = assert_error(client.post(f"/api/subscriptions/{sub_id}/change-plan/", json={"plan_id": fast.id},
                                       headers=writer), 403, "PERMISSION_DENIED")
    assert "an invoice and a credit note" in refused["message"]
    assert db.session.get(Subscription, sub_id).plan_id == slow.id
    assert db.session.scalar(select(func.count()).select_from(CreditNote)) == 0
    assert_ok(client.post(f"/api/subscriptions/{sub_id}/change-plan/", json={"plan_id": fast.id},
                          headers=bearer("billing", "read,write,billing")))

    (credit,) = db.session.scalars(select(CreditNote).where(CreditNote.kind == "plan_change")).all()
    (charge,) = db.session.scalars(select(InvoiceLine).where(InvoiceLine.kind == "plan_change")).all()
    assert charge.subscription_id == sub_id and charge.period_start == today() and charge.unit_price_cents == 6000
    assert 0 < credit.amount_cents < 3000 and credit.amount_cents < charge.amount_cents
    assert db.session.get(Invoice, charge.invoice_id).status in ("open", "paid")

    again = PlanFactory()
    body = assert_error(client.post(f"/api/subscriptions/{sub_id}/change-plan/", json={"plan_id": again.id},
                                    headers=writer), 422, "BUSINESS_RULE_VIOLATION")
    assert "today" in body["message"]


def test_change_plan_refuses_a_retired_plan_the_same_plan_and_a_cancelled_subscription(client, writer):
    sub = SubscriptionFactory()
    retired = PlanFactory(active=False)
    body = assert_error(client.post(f"/api/subscriptions/{sub.id}/change-plan/", json={"plan_id": retired.id},
                                    headers=writer), 422, "BUSINESS_RULE_VIOLATION")
    assert body["error"]["details"] == {"plan_id": "Retired."}
    body = assert_error(client.post(f"/api/subscriptions/{sub.id}/change-plan/", json={"plan_id": sub.plan_id},
                                    headers=writer), 422, "BUSINESS_RULE_VIOLATION")
    assert "plan_id" in body["error"]["details"]
    assert_error(client.post(f"/api/subscriptions/{sub.id}/change-plan/", json={"plan_id": 999_999},
                             headers=writer), 404, "NOT_FOUND")
    assert_error(client.post(f"/api/subscriptions/{sub.id}/change-plan/", json={}, headers=writer), 422,
                 "VALIDATION_ERROR")
    cancelled = SubscriptionFactory(status="cancelled", end_date=today())
    assert_error(client.post(f"/api/subscriptions/{cancelled.id}/change-plan/", json={"plan_id": PlanFactory().id},
                             headers=writer), 422, "BUSINESS_RULE_VIOLATION")
    assert db.session.get(Subscription, sub.id).plan_id == sub.plan_id


def test_suspend_and_resume_by_hand(client, writer):
    sub = SubscriptionFactory()
    data = assert_ok(client.post(f"/api/subscriptions/{sub.id}/suspend/", json={"reason": "vacation"},
                                 headers=writer))
    assert (data["status"], data["suspension_reason"]) == ("suspended", "vacation")
    assert db.session.get(Customer, sub.customer_id).status == "suspended"  # no other active service
    assert_error(client.post(f"/api/subscriptions/{sub.id}/suspend/", json={"reason": "manual"}, headers=writer),
                 422, "BUSINESS_RULE_VIOLATION")

    data = assert_ok(client.post(f"/api/subscriptions/{sub.id}/resume/", headers=writer))
    assert (data["status"], data["suspension_reason"]) == ("active", None)
    assert data["next_bill_date"] >= today().isoformat()
    assert db.session.get(Customer, sub.customer_id).status == "active"
    assert actions(sub.id)[-2:] == ["subscription.suspend", "subscription.resume"]
    body = assert_error(client.post(f"/api/subscriptions/{sub.id}/resume/", headers=writer), 422,
                        "BUSINESS_RULE_VIOLATION")
    assert "suspended" in body["message"]


def test_non_payment_is_neither_a_reason_to_give_nor_a_suspension_to_lift_by_hand(client, writer):
    active = SubscriptionFactory()
    body = assert_error(client.post(f"/api/subscriptions/{active.id}/suspend/", json={"reason": "non_payment"},
                                    headers=writer), 422, "VALIDATION_ERROR")
    assert "reason" in body["error"]["details"]
    assert_error(client.post(f"/api/subscriptions/{active.id}/suspend/", json={}, headers=writer), 422,
                 "VALIDATION_ERROR")
    assert db.session.get(Subscription, active.id).status == "active"

    unpaid = SubscriptionFactory(status="suspended", suspension_reason="non_payment")
    body = assert_error(client.post(f"/api/subscriptions/{unpaid.id}/resume/", headers=writer), 422,
                        "BUSINESS_RULE_VIOLATION")
    assert "non-payment" in body["message"]
    stored = db.session.get(Subscription, unpaid.id)
    assert (stored.status, stored.suspension_reason) == ("suspended", "non_payment")


def test_cancel_today_frees_the_login(client, writer):
    sub = SubscriptionFactory(start_date=today() - timedelta(days=40), pppoe_username="leaving")
    data = assert_ok(client.post(f"/api/subscriptions/{sub.id}/cancel/", json={}, headers=writer))
    assert (data["status"], data["end_date"]) == ("cancelled", today().isoformat())
    assert actions(sub.id)[-1] == "subscription.cancel"
    assert_ok(add(client, writer, customer_id=CustomerFactory().id, plan_id=sub.plan_id, pppoe_username="leaving"),
              201)
    body = assert_error(client.post(f"/api/subscriptions/{sub.id}/cancel/", json={}, headers=writer), 422,
                        "BUSINESS_RULE_VIOLATION")
    assert "already cancelled" in body["message"]


def test_cancel_in_the_past_is_allowed_and_in_the_future_refused(client, writer):
    sub = SubscriptionFactory(start_date=today() - timedelta(days=40))
    tomorrow = (today() + timedelta(days=1)).isoformat()
    body = assert_error(client.post(f"/api/subscriptions/{sub.id}/cancel/", json={"end_date": tomorrow},
                                    headers=writer), 422, "VALIDATION_ERROR")
    assert "end_date" in body["error"]["details"]
    before_start = (today() - timedelta(days=41)).isoformat()
    body = assert_error(client.post(f"/api/subscriptions/{sub.id}/cancel/", json={"end_date": before_start},
                                    headers=writer), 422, "VALIDATION_ERROR")
    assert "end_date" in body["error"]["details"]
    assert db.session.get(Subscription, sub.id).status == "active"
    yesterday = (today() - timedelta(days=1)).isoformat()
    data = assert_ok(client.post(f"/api/subscriptions/{sub.id}/cancel/", json={"end_date": yesterday},
                                 headers=writer))
    assert (data["status"], data["end_date"]) == ("cancelled", yesterday)


@pytest.mark.parametrize("action", ["change-plan", "suspend", "resume", "cancel"])
@pytest.mark.parametrize("subscription_id", [0, 2**31 - 1])
def test_actions_on_unknown_subscriptions_are_404(client, writer, action, subscription_id):
    payload = {"change-plan": {"plan_id": 1}, "suspend": {"reason": "manual"}}.get(action, {})
    response = client.post(f"/api/subscriptions/{subscription_id}/{action}/", json=payload, headers=writer)
    assert_error(response, 404, "NOT_FOUND")

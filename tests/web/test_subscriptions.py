"""Subscriptions: staff add service to a customer, change its plan, suspend, resume and cancel it."""
from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Customer, Subscription
from isp_admin.services.platform.clock import today
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory


def text_of(response) -> str:
    return response.get_data(as_text=True)


@pytest.fixture
def customer():
    return CustomerFactory(name="Wanjiru Mwangi")


@pytest.fixture
def plan():
    return PlanFactory(code="HOME-50", name="Home 50", monthly_price_cents=3900)


def add(client, customer, plan, **fields):
    """Post the add-subscription form for `customer` on `plan`."""
    data = {"plan_id": plan.id, "start_date": today().isoformat(), **fields}
    return client.post(f"/customers/{customer.id}/subscriptions/new", data=data)


def subscriptions() -> list[Subscription]:
    return list(db.session.scalars(select(Subscription).order_by(Subscription.id)))


def subscription_events(sub_id: int) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(
        AuditEvent.entity_type == "subscriptions", AuditEvent.entity_id == sub_id).order_by(AuditEvent.id)))


def customer_status(customer_id: int) -> str:
    return db.session.scalar(select(Customer.status).where(Customer.id == customer_id))


# --- adding -------------------------------------------------------------------------------------------------


def test_a_subscription_starting_today_is_active_and_first_billed_today(client, login, customer, plan):
    login("support")

    response = add(client, customer, plan, pppoe_username="wanjiru.m", cpe_mac="00-1a-2b-3c-4d-5e")

    assert response.status_code == 302 and response.headers["Location"].endswith(f"/customers/{customer.id}")
    [sub] = subscriptions()
    assert sub.status == "active" and sub.suspension_reason is None
    assert sub.start_date == sub.next_bill_date == today()
    assert sub.billing_day == today().day
    assert sub.price_override_cents is None
    assert sub.cpe_mac == "00:1A:2B:3C:4D:5E"
    [event] = subscription_events(sub.id)
    assert event.action == "subscription.create" and event.customer_id == customer.id
    page = text_of(client.get(f"/customers/{customer.id}"))
    assert "Subscription added." in page
    assert "Home 50" in page and "wanjiru.m" in page and "$39.00" in page
    assert "subscription.create" in page.split("History", 1)[1]


def test_a_subscription_starting_later_is_pending_until_then(client, login, customer, plan):
    login()
    start = today() + timedelta(days=10)

    assert add(client, customer, plan, start_date=start.isoformat()).status_code == 302

    [sub] = subscriptions()
    assert sub.status == "pending"
    assert sub.next_bill_date == start and sub.billing_day == start.day


def test_a_chosen_billing_day_is_kept(client, login, customer, plan):
    login()
    assert add(client, customer, plan, start_date="2026-01-15", billing_day="31").status_code == 302
    [sub] = subscriptions()
    assert (sub.billing_day, sub.next_bill_date) == (31, date(2026, 1, 15))


@pytest.mark.parametrize(("fields", "message"), [
    ({"billing_day": "0"}, "Number must be between 1 and 31."),
    ({"billing_day": "32"}, "Number must be between 1 and 31."),
    ({"billing_day": "first"}, "Not a valid integer value."),
    ({"start_date": ""}, "This field is required."),
    ({"start_date": "2026-02-30"}, "Not a valid date value."),
    ({"static_ip": "999.1.1.1"}, "Enter a valid IPv4 or IPv6 address."),
    ({"static_ip": "10.0.0"}, "Enter a valid IPv4 or IPv6 address."),
    ({"cpe_mac": "00:1A:2B:3C:4D"}, "Enter a MAC address such as 00:1A:2B:3C:4D:5E."),
    ({"cpe_mac": "00:1A:2B:3C:4D:ZZ"}, "Enter a MAC address such as 00:1A:2B:3C:4D:5E."),
    ({"pppoe_username": "has space"}, "Letters, digits and . _ @ - only"),
    ({"price_override_cents": "-1"}, "The amount cannot be negative."),
    ({"price_override_cents": "39.001"}, "Use at most two decimal places."),
    ({"plan_id": "999"}, "Not a valid choice."),
])
def test_invalid_details_are_shown_on_the_form_and_nothing_is_saved(client, login, customer, plan, fields, message):
    login()

    response = add(client, customer, plan, **{"pppoe_username": "kept.typed", **fields})

    assert response.status_code == 200
    body = text_of(response)
    assert message in body
    if "pppoe_username" not in fields:
        assert 'value="kept.typed"' in body
    assert subscriptions() == []


def test_an_ipv6_static_ip_is_accepted_and_normalised(client, login, customer, plan):
    login()
    assert add(client, customer, plan, static_ip=" 2001:DB8:0:0:0:0:0:1 ").status_code == 302
    assert subscriptions()[0].static_ip == "2001:db8::1"


def test_a_price_override_is_kept_in_cents(client, login, customer, plan):
    login()

    assert add(client, customer, plan, price_override_cents="39.00").status_code == 302
    assert add(client, customer, plan, price_override_cents="0").status_code == 302

    assert [s.price_override_cents for s in subscriptions()] == [3900, 0]
    page = text_of(client.get(f"/subscriptions/{subscriptions()[0].id}"))
    assert "$39.00" in page and "override" in page


@pytest.mark.parametrize(("field", "taken", "typed"), [
    ("pppoe_username", "shared.login", "shared.login"),
    ("static_ip", "100.64.0.9", "100.64.0.9"),
    ("static_ip", "2001:db8::9", "2001:DB8:0::9"),   # the same address written differently
])
def test_a_network_identifier_of_another_live_subscription_is_refused(client, login, customer, plan, field, taken,
                                                                      typed):
    login()
    other = SubscriptionFactory(plan=plan, status="suspended", suspension_reason="vacation", **{field: taken})

    response = add(client, customer, plan, **{field: typed})

    assert response.status_code == 200
    assert "Already used by another live subscription." in text_of(response)
    assert "A network identifier is already in use." in text_of(response)
    assert [s.id for s in subscriptions()] == [other.id]


def test_a_cancelled_subscriptions_login_and_ip_can_be_reused(client, login, customer, plan):
    login()
    SubscriptionFactory(plan=plan, status="cancelled", pppoe_username="old.login", static_ip="100.64.0.9",
                        end_date=date(2026, 3, 1))

    assert add(client, customer, plan, pppoe_username="old.login", static_ip="100.64.0.9").status_code == 302

    assert [s.status for s in subscriptions()] == ["cancelled", "active"]


def test_a_closed_customer_cannot_get_a_new_subscription(client, login, plan):
    login()
    closed = CustomerFactory(status="closed")
    assert "Add subscription" not in text_of(client.get(f"/customers/{closed.id}"))

    response = add(client, closed, plan)

    assert response.status_code == 200
    assert "This customer&#39;s account is closed." in text_of(response)
    assert subscriptions() == []


# --- changing -----------------------------------------------------------------------------------------------


def test_changing_plan_is_audited_with_the_old_and_new_plan(client, login, plan):
    login("billing")
    sub = SubscriptionFactory(plan=plan)
    fibre = PlanFactory(name="Fibre 300")
    page = text_of(client.get(f"/subscriptions/{sub.id}"))
    assert "Fibre 300" in page

    response = client.post(f"/subscriptions/{sub.id}/change-plan", data={"plan_id": fibre.id})

    assert response.status_code == 302
    db.session.refresh(sub)
    assert sub.plan_id == fibre.id
    [event] = [e for e in subscription_events(sub.id) if e.action == "subscription.change_plan"]
    assert (event.before, event.after) == ({"plan_id": plan.id}, {"plan_id": fibre.id})
    assert event.customer_id == sub.customer_id


def test_changing_to_the_same_plan_or_a_retired_one_is_refused(client, login, plan):
    login()
    sub = SubscriptionFactory(plan=plan)
    PlanFactory(name="Fibre 300")
    retired = PlanFactory(name="Legacy", active=False)

    same = client.post(f"/subscriptions/{sub.id}/change-plan", data={"plan_id": plan.id})
    old = client.post(f"/subscriptions/{sub.id}/change-plan", data={"plan_id": retired.id})

    assert same.status_code == 422 and "already on this plan" in text_of(same)
    assert old.status_code == 422 and "Not a valid choice." in text_of(old)
    db.session.refresh(sub)
    assert sub.plan_id == plan.id
    assert subscription_events(sub.id) == []


def test_suspending_for_vacation_then_resuming(client, login, customer, plan):
    login("support")
    sub = SubscriptionFactory(customer=customer, plan=plan)

    response = client.post(f"/subscriptions/{sub.id}/suspend", data={"reason": "vacation"})

    assert response.status_code == 302
    db.session.refresh(sub)
    assert (sub.status, sub.suspension_reason) == ("suspended", "vacation")
    assert "suspended · vacation" in text_of(client.get(f"/subscriptions/{sub.id}"))

    assert client.post(f"/subscriptions/{sub.id}/resume").status_code == 302
    db.session.refresh(sub)
    assert (sub.status, sub.suspension_reason) == ("active", None)
    assert [e.action for e in subscription_events(sub.id)] == ["subscription.suspend", "subscription.resume"]
    assert subscription_events(sub.id)[0].after == {"status": "suspended", "suspension_reason": "vacation"}


def test_staff_cannot_suspend_for_non_payment_by_hand(client, login, plan):
    login()
    sub = SubscriptionFactory(plan=plan)
    response = client.post(f"/subscriptions/{sub.id}/suspend", data={"reason": "non_payment"})
    assert response.status_code == 422
    db.session.refresh(sub)
    assert sub.status == "active"


def test_a_non_payment_suspension_cannot_be_resumed_by_hand(client, login, plan):
    login()
    sub = SubscriptionFactory(plan=plan, status="suspended", suspension_reason="non_payment")
    page = text_of(client.get(f"/subscriptions/{sub.id}"))
    assert "Suspended for non-payment" in page and "/resume" not in page

    response = client.post(f"/subscriptions/{sub.id}/resume")

    assert response.status_code == 422
    assert "suspended for non-payment; it resumes when paid" in text_of(response)
    db.session.refresh(sub)
    assert (sub.status, sub.suspension_reason) == ("suspended", "non_payment")
    assert subscription_events(sub.id) == []


@pytest.mark.parametrize("status", ["pending", "cancelled"])
def test_only_an_active_subscription_can_be_suspended(client, login, plan, status):
    login()
    sub = SubscriptionFactory(plan=plan, status=status, pppoe_username=None)

    response = client.post(f"/subscriptions/{sub.id}/suspend", data={"reason": "manual"})

    assert response.status_code == 422
    assert f"Only an active subscription can be suspended (this one is {status})." in text_of(response)
    db.session.refresh(sub)
    assert sub.status == status


def test_cancelling_frees_the_login_for_someone_else(client, login, customer, plan):
    login()
    sub = SubscriptionFactory(plan=plan, pppoe_username="moving.out", start_date=date(2026, 1, 15))

    response = client.post(f"/subscriptions/{sub.id}/cancel", data={"end_date": "2026-03-31"})

    assert response.status_code == 302
    db.session.refresh(sub)
    assert (sub.status, sub.end_date) == ("cancelled", date(2026, 3, 31))
    assert add(client, customer, plan, pppoe_username="moving.out").status_code == 302
    assert "/cancel" not in text_of(client.get(f"/subscriptions/{sub.id}"))   # nothing left to change


def test_an_end_date_before_the_start_is_refused(client, login, plan):
    login()
    sub = SubscriptionFactory(plan=plan, start_date=date(2026, 1, 15))

    response = client.post(f"/subscriptions/{sub.id}/cancel", data={"end_date": "2026-01-14"})

    assert response.status_code == 422
    assert "The end date cannot be before the start date." in text_of(response)
    assert "On or after the start." in text_of(response)
    db.session.refresh(sub)
    assert (sub.status, sub.end_date) == ("active", None)


def test_an_unknown_subscription_is_not_found(client, login):
    login()
    assert client.get("/subscriptions/999").status_code == 404
    assert client.post("/subscriptions/999/suspend", data={"reason": "manual"}).status_code == 404


# --- the customer's status follows its subscriptions --------------------------------------------------------


def test_the_customer_is_suspended_when_every_live_subscription_is(client, login, customer, plan):
    login()
    home = SubscriptionFactory(customer=customer, plan=plan)
    office = SubscriptionFactory(customer=customer, plan=plan)

    client.post(f"/subscriptions/{home.id}/suspend", data={"reason": "manual"})
    assert customer_status(customer.id) == "active"

    client.post(f"/subscriptions/{office.id}/suspend", data={"reason": "vacation"})
    assert customer_status(customer.id) == "suspended"
    page = text_of(client.get(f"/customers/{customer.id}"))
    assert "customer.status" in page.split("History", 1)[1]

    client.post(f"/subscriptions/{office.id}/resume")
    assert customer_status(customer.id) == "active"
    changes = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "customer.status")
                                 .order_by(AuditEvent.id)).all()
    assert [(e.before, e.after) for e in changes] == [
        ({"status": "active"}, {"status": "suspended"}), ({"status": "suspended"}, {"status": "active"})]


def test_every_state_change_writes_one_audit_event_shown_on_the_customer_page(client, login, customer, plan):
    user = login("support")
    fibre = PlanFactory(name="Fibre 300")
    assert add(client, customer, plan, pppoe_username="life.cycle").status_code == 302
    sub_id = subscriptions()[0].id
    steps = [
        ("subscription.change_plan", f"/subscriptions/{sub_id}/change-plan", {"plan_id": fibre.id}),
        ("subscription.suspend", f"/subscriptions/{sub_id}/suspend", {"reason": "manual"}),
        ("subscription.resume", f"/subscriptions/{sub_id}/resume", {}),
        ("subscription.update", f"/subscriptions/{sub_id}/network",
         {"pppoe_username": "life.cycle2", "static_ip": "100.64.1.1", "cpe_mac": ""}),
        ("subscription.cancel", f"/subscriptions/{sub_id}/cancel", {"end_date": today().isoformat()}),
    ]
    for action, url, data in steps:
        before = {e.id for e in subscription_events(sub_id)}

        assert client.post(url, data=data).status_code == 302, action

        new = [e for e in subscription_events(sub_id) if e.id not in before]
        assert [e.action for e in new] == [action]
        assert new[0].customer_id == customer.id and new[0].actor_label == user.email
    all_events = db.session.scalars(select(AuditEvent).where(AuditEvent.entity_type != "users")).all()
    assert all(e.customer_id == customer.id for e in all_events)
    history = text_of(client.get(f"/customers/{customer.id}")).split("History", 1)[1]
    for action, _url, _data in steps:
        assert action in history
    assert "life.cycle2" in history and "100.64.1.1" in history


# --- the database is the last guard -------------------------------------------------------------------------


@pytest.mark.parametrize(("column", "value"), [("pppoe_username", "raced"), ("static_ip", "100.64.7.7")])
def test_the_database_refuses_two_live_subscriptions_with_one_identifier(app, column, value):
    customer, plan = CustomerFactory(), PlanFactory()

    def subscription(status: str) -> Subscription:
        return Subscription(customer_id=customer.id, plan_id=plan.id, status=status, start_date=date(2026, 1, 1),
                            billing_day=1, next_bill_date=date(2026, 2, 1),
                            end_date=date(2026, 1, 31) if status == "cancelled" else None, **{column: value})

    db.session.add_all([subscription("active"), subscription("cancelled")])
    db.session.commit()   # one live and one cancelled: fine

    db.session.add(subscription("pending"))
    with pytest.raises(IntegrityError):
        db.session.commit()
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(Subscription)) == 2


def test_a_cancellation_cannot_be_dated_in_the_future(client, login):
    """Cancelling frees the login and IP at once, so a future end date is refused rather than silently ignored."""
    login("support")
    sub = SubscriptionFactory(start_date=today() - timedelta(days=40))
    response = client.post(f"/subscriptions/{sub.id}/cancel",
                           data={"end_date": (today() + timedelta(days=3)).isoformat()})
    assert response.status_code == 422
    assert "Today or earlier." in response.get_data(as_text=True)
    db.session.refresh(sub)
    assert sub.status == "active" and sub.end_date is None


def test_a_subscription_page_shows_its_own_history(client, login):
    login("support")
    sub = SubscriptionFactory()
    assert client.post(f"/subscriptions/{sub.id}/suspend", data={"reason": "vacation"}).status_code == 302
    page = client.get(f"/subscriptions/{sub.id}").get_data(as_text=True)
    assert "subscription.suspend" in page and "vacation" in page

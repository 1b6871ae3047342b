"""The dashboard: customers by status, active subscriptions by plan, and monthly recurring revenue."""
from __future__ import annotations

import re

from isp_admin.extensions import db
from isp_admin.services.customers import subscriptions as subscription_service
from isp_admin.services.platform.clock import today
from isp_admin.services.reporting.dashboard import dashboard_summary
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory


def text_of(response) -> str:
    return response.get_data(as_text=True)


def mrr_shown(response) -> str:
    match = re.search(r'id="mrr">([^<]+)<', text_of(response))
    assert match, "no MRR on the page"
    return match.group(1)


def stat(response, label: str) -> str:
    """The big number under a stat card's label, e.g. 'Suspended customers'."""
    match = re.search(re.escape(label) + r'</div>\s*<div class="stat-value">(?:<a[^>]*>)?([^<]+)<', text_of(response))
    assert match, f"no {label!r} card"
    return match.group(1)


def plan_row(response, name: str) -> list[str]:
    """The cells of a plan's row in 'Active subscriptions by plan': name, active count, MRR."""
    match = re.search(r">" + re.escape(name) + r"</a>.*?</tr>", text_of(response), re.S)
    assert match, f"{name} is not listed"
    return re.findall(r'<td class="text-end">([^<]*)</td>', match.group(0))


def test_the_figures_add_up(client, login):
    login("readonly")
    home = PlanFactory(name="Home 25", monthly_price_cents=2900)
    fibre = PlanFactory(name="Fibre 100", monthly_price_cents=5500)
    PlanFactory(name="Unsold", monthly_price_cents=9900)
    retired = PlanFactory(name="Legacy DSL", monthly_price_cents=1500, active=False)
    active_customers = CustomerFactory.create_batch(3, status="active")
    suspended_customers = CustomerFactory.create_batch(2, status="suspended")
    CustomerFactory(status="closed")
    a, b, c = active_customers
    SubscriptionFactory(customer=a, plan=home)                               # 29.00
    SubscriptionFactory(customer=b, plan=home, price_override_cents=2000)    # 20.00, the override counts
    SubscriptionFactory(customer=c, plan=fibre)                              # 55.00
    SubscriptionFactory(customer=c, plan=fibre, price_override_cents=0)      # 0.00: free, but still active
    SubscriptionFactory(customer=a, plan=retired)                            # 15.00: retired plans still bill
    # Not revenue: pending, suspended (any reason) and cancelled.
    SubscriptionFactory(customer=a, plan=fibre, status="pending")
    SubscriptionFactory(customer=suspended_customers[0], plan=fibre, status="suspended",
                        suspension_reason="non_payment")
    SubscriptionFactory(customer=suspended_customers[1], plan=home, status="suspended", suspension_reason="vacation")
    SubscriptionFactory(customer=b, plan=fibre, status="cancelled", pppoe_username=None)

    summary = dashboard_summary()
    assert summary.customers_by_status == {"active": 3, "suspended": 2, "closed": 1}
    assert summary.mrr_cents == 2900 + 2000 + 5500 + 0 + 1500
    assert summary.active_subscriptions == 5
    by_plan = {p["name"]: (p["active"], p["mrr"]) for p in summary.plans}
    assert by_plan == {"Home 25": (2, 4900), "Fibre 100": (2, 5500), "Legacy DSL": (1, 1500), "Unsold": (0, 0)}

    response = client.get("/")
    assert response.status_code == 200
    assert mrr_shown(response) == "$119.00"
    assert stat(response, "Active subscriptions") == "5"
    assert stat(response, "Active customers") == "3" and stat(response, "Suspended customers") == "2"
    assert "1 closed" in text_of(response)
    assert plan_row(response, "Home 25") == ["2", "$49.00"]
    assert plan_row(response, "Fibre 100") == ["2", "$55.00"]
    assert plan_row(response, "Unsold") == ["0", "$0.00"]
    assert "retired" in text_of(response).split("Legacy DSL", 1)[1].split("</tr>", 1)[0]


def test_a_new_subscription_shows_on_the_dashboard_at_once(client, login):
    login()
    plan = PlanFactory(name="Home 25", monthly_price_cents=2900)
    customer = CustomerFactory()
    SubscriptionFactory(customer=customer, plan=plan)
    assert mrr_shown(client.get("/")) == "$29.00"   # now cached

    subscription_service.add_subscription(customer.id, plan.id, today(), price_override_cents=1000)
    db.session.commit()

    assert mrr_shown(client.get("/")) == "$39.00"

    response = client.post(f"/customers/{customer.id}/subscriptions/new",
                           data={"plan_id": plan.id, "start_date": today().isoformat()})
    assert response.status_code == 302
    assert mrr_shown(client.get("/")) == "$68.00"


def test_suspending_and_repricing_show_on_the_dashboard_at_once(client, login):
    login()
    plan = PlanFactory(code="HOME-25", name="Home 25", monthly_price_cents=2900, tax_rate_bp=1600)
    sub = SubscriptionFactory(plan=plan)
    assert mrr_shown(client.get("/")) == "$29.00"

    client.post(f"/subscriptions/{sub.id}/suspend", data={"reason": "vacation"})
    response = client.get("/")
    assert mrr_shown(response) == "$0.00" and stat(response, "Suspended customers") == "1"

    client.post(f"/subscriptions/{sub.id}/resume")
    client.post(f"/plans/{plan.id}/edit", data={
        "code": "HOME-25", "name": "Home 25", "download_mbps": "100", "upload_mbps": "20",
        "monthly_price_cents": "31.00", "tax_rate_bp": "16"})
    assert mrr_shown(client.get("/")) == "$31.00"


def test_a_new_customer_shows_on_the_dashboard_at_once(client, login):
    login()
    CustomerFactory()
    assert stat(client.get("/"), "Active customers") == "1"

    assert client.post("/customers/new", data={"name": "Isla Walsh"}).status_code == 302

    assert stat(client.get("/"), "Active customers") == "2"


def test_an_empty_business_shows_zeros_and_invites_a_first_plan(client, login):
    login()

    response = client.get("/")

    assert response.status_code == 200
    assert mrr_shown(response) == "$0.00"
    assert stat(response, "Active subscriptions") == "0"
    assert stat(response, "Active customers") == "0" and stat(response, "Suspended customers") == "0"
    assert "No plans yet" in text_of(response) and "Create the first plan" in text_of(response)


def test_the_dashboard_needs_a_signed_in_user(client):
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]

"""Plans: billing staff create and edit them; a plan in use is retired, never deleted."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from isp_admin.errors import BusinessRuleViolation
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Plan, Subscription
from isp_admin.services.customers import subscriptions as subscription_service
from isp_admin.services.platform.clock import today
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

FIBRE = {
    "code": "fibre-100",
    "name": "Fibre 100",
    "download_mbps": "100",
    "upload_mbps": "50",
    "data_cap_gb": "",
    "monthly_price_cents": "49.99",
    "setup_fee_cents": "1,250.00",
    "tax_rate_bp": "16",
}


def text_of(response) -> str:
    return response.get_data(as_text=True)


def plan_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Plan))


def events(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def codes_listed(response) -> list[str]:
    return re.findall(r"<td><code>([^<]+)</code></td>", text_of(response))


def plan_row(response, code: str) -> str:
    """The HTML of one plan's row in the plan list."""
    match = re.search(r"<tr[^>]*>\s*<td><code>" + re.escape(code) + r"</code>.*?</tr>", text_of(response), re.S)
    assert match, f"{code} is not listed"
    return match.group(0)


# --- create -------------------------------------------------------------------------------------------------


def test_billing_creates_a_plan_typing_prices_and_tax_as_people_write_them(client, login):
    login("billing")

    response = client.post("/plans/new", data=FIBRE)

    assert response.status_code == 302 and response.headers["Location"].endswith("/plans/")
    plan = db.session.scalars(select(Plan)).one()
    assert plan.code == "FIBRE-100"
    assert (plan.monthly_price_cents, plan.setup_fee_cents, plan.tax_rate_bp) == (4999, 125000, 1600)
    assert plan.data_cap_gb is None and plan.active
    assert plan.currency == "USD"
    [event] = events("plan.create")
    assert event.entity_id == plan.id and event.after["monthly_price_cents"] == 4999
    listing = client.get("/plans/")
    row = plan_row(listing, "FIBRE-100")
    assert "$49.99" in row and "$1,250.00" in row and "16.00%" in row and "Unlimited" in row
    assert "Plan FIBRE-100 created." in text_of(listing)


@pytest.mark.parametrize(("typed", "basis_points"), [("7.5", 750), ("16", 1600), ("0", 0), ("", 0), ("100", 10000),
                                                     ("12.25%", 1225)])
def test_a_tax_rate_is_typed_as_a_percentage_and_kept_in_basis_points(client, login, typed, basis_points):
    login()
    assert client.post("/plans/new", data={**FIBRE, "tax_rate_bp": typed}).status_code == 302
    assert db.session.scalar(select(Plan.tax_rate_bp)) == basis_points


def test_a_free_plan_and_an_empty_setup_fee_are_allowed(client, login):
    login()
    response = client.post("/plans/new", data={**FIBRE, "monthly_price_cents": "0", "setup_fee_cents": ""})
    assert response.status_code == 302
    assert db.session.execute(select(Plan.monthly_price_cents, Plan.setup_fee_cents)).one() == (0, 0)


def test_a_nul_in_a_form_is_refused_at_the_edge_and_nothing_is_saved(client, login):
    login()

    response = client.post("/plans/new", data={**FIBRE, "name": "Fibre\x00"})

    # The request edge (isp_admin/edge.py) refuses it for every form alike: the 400 page says why.
    assert response.status_code == 400 and "contains a NUL character" in text_of(response)
    assert plan_count() == 0


@pytest.mark.parametrize(("field", "typed", "message"), [
    ("monthly_price_cents", "-5", "The amount cannot be negative."),
    ("monthly_price_cents", "49.999", "Use at most two decimal places."),
    ("monthly_price_cents", "abc", "Enter an amount such as 29.99."),
    ("monthly_price_cents", "1e30", "Enter an amount such as 29.99."),
    ("monthly_price_cents", "9" * 30, "The amount is too large."),
    ("monthly_price_cents", "49,99", "Enter an amount such as 29.99."),   # not 4999.00
    ("monthly_price_cents", "", "This field is required."),
    ("setup_fee_cents", "-1", "The amount cannot be negative."),
    ("tax_rate_bp", "101", "At most 100%."),
    ("tax_rate_bp", "abc", "Enter a percentage such as 16 or 7.5."),
    ("tax_rate_bp", "7.555", "Enter a percentage such as 16 or 7.5."),
    ("tax_rate_bp", "-16", "Enter a percentage such as 16 or 7.5."),
    ("code", "FIBRE 100", "Use 1–32 letters, digits"),
    ("code", "fibre/100", "Use 1–32 letters, digits"),
    ("code", "-FIBRE", "Use 1–32 letters, digits"),
    ("code", "", "This field is required."),
    ("name", "   ", "This field is required."),
    ("download_mbps", "0", "Number must be between 1 and 1000000."),
    ("download_mbps", "", "This field is required."),
    ("download_mbps", "fast", "Not a valid integer value."),
    ("upload_mbps", "2000000", "Number must be between 1 and 1000000."),
    ("data_cap_gb", "-5", "Number must be between 1 and 10000000."),
])
def test_an_invalid_plan_is_sent_back_with_the_error_and_nothing_is_saved(client, login, field, typed, message):
    login()

    response = client.post("/plans/new", data={**FIBRE, field: typed})

    assert response.status_code == 200
    body = text_of(response)
    assert message in body
    assert 'value="Fibre 100"' in body or field == "name"   # what was typed stays in the form
    if typed.strip() and "\x00" not in typed:
        assert f'value="{typed}"' in body
    assert plan_count() == 0
    assert events("plan.create") == []


def test_a_duplicate_code_is_refused_whatever_its_case(client, login):
    login()
    PlanFactory(code="FIBRE-100", name="The original")

    response = client.post("/plans/new", data={**FIBRE, "code": "Fibre-100"})

    assert response.status_code == 200
    assert "Already in use." in text_of(response)
    assert "Another plan already uses this code." in text_of(response)
    assert db.session.scalars(select(Plan.name)).all() == ["The original"]


def test_support_staff_may_not_create_plans(client, login):
    login("support")
    assert client.post("/plans/new", data=FIBRE).status_code == 403
    assert plan_count() == 0


# --- edit ---------------------------------------------------------------------------------------------------


def test_editing_a_plan_shows_its_amounts_and_audits_only_what_changed(client, login):
    login("billing")
    plan = PlanFactory(code="HOME-25", name="Home 25", monthly_price_cents=2900, tax_rate_bp=750)

    form = text_of(client.get(f"/plans/{plan.id}/edit"))
    assert 'value="29.00"' in form and 'value="7.5"' in form

    response = client.post(f"/plans/{plan.id}/edit", data={
        "code": "HOME-25", "name": "Home 25", "download_mbps": "100", "upload_mbps": "20",
        "monthly_price_cents": "31.50", "setup_fee_cents": "0.00", "tax_rate_bp": "7.5",
    })

    assert response.status_code == 302
    db.session.refresh(plan)
    assert plan.monthly_price_cents == 3150
    [event] = events("plan.update")
    assert (event.before, event.after) == ({"monthly_price_cents": 2900}, {"monthly_price_cents": 3150})


def test_a_plan_cannot_take_another_plans_code(client, login):
    login()
    PlanFactory(code="HOME-10")
    plan = PlanFactory(code="HOME-25")

    response = client.post(f"/plans/{plan.id}/edit", data={**FIBRE, "code": "home-10"})

    assert response.status_code == 200 and "Already in use." in text_of(response)
    db.session.refresh(plan)
    assert plan.code == "HOME-25"


# --- retire, reactivate, delete -----------------------------------------------------------------------------


def test_a_plan_in_use_cannot_be_deleted_but_can_be_retired_and_reactivated(client, login):
    login("billing")
    plan = PlanFactory(code="LEGACY-8")
    SubscriptionFactory(plan=plan)

    response = client.post(f"/plans/{plan.id}/delete", follow_redirects=True)

    assert response.status_code == 200
    assert "cannot be deleted. Retire it instead." in text_of(response)
    assert db.session.scalar(select(Plan.id).where(Plan.id == plan.id)) == plan.id
    assert events("plan.delete") == []
    assert "/delete" not in plan_row(response, "LEGACY-8")   # no Delete button for a plan in use

    response = client.post(f"/plans/{plan.id}/retire", follow_redirects=True)
    assert "Plan retired." in text_of(response)
    assert "retired" in plan_row(response, "LEGACY-8") and "/reactivate" in plan_row(response, "LEGACY-8")
    db.session.refresh(plan)
    assert plan.active is False
    [retired] = events("plan.retire")
    assert (retired.before, retired.after) == ({"active": True}, {"active": False})

    response = client.post(f"/plans/{plan.id}/reactivate", follow_redirects=True)
    assert "Plan is active again." in text_of(response)
    db.session.refresh(plan)
    assert plan.active is True
    assert len(events("plan.reactivate")) == 1


def test_a_plan_only_cancelled_subscriptions_used_is_kept_too(client, login):
    login()
    plan = PlanFactory(code="OLD-1")
    SubscriptionFactory(plan=plan, status="cancelled", pppoe_username=None)

    listing = client.get("/plans/")
    assert ">0</a>" in plan_row(listing, "OLD-1")          # no subscribers now...
    assert "/delete" not in plan_row(listing, "OLD-1")     # ...but no Delete button that could only fail

    client.post(f"/plans/{plan.id}/delete")
    assert db.session.scalar(select(Plan.id).where(Plan.id == plan.id)) == plan.id


def test_an_unused_plan_is_deleted_with_an_audit_event(client, login):
    login()
    plan = PlanFactory(code="TRIAL-1")
    plan_id = plan.id
    assert f"/plans/{plan_id}/delete" in plan_row(client.get("/plans/"), "TRIAL-1")

    response = client.post(f"/plans/{plan_id}/delete", follow_redirects=True)

    assert "Plan deleted." in text_of(response)
    assert plan_count() == 0
    [event] = events("plan.delete")
    assert event.entity_id == plan_id and event.before["code"] == "TRIAL-1" and event.after is None
    assert "No plans yet" in text_of(response)


def test_acting_on_a_missing_plan_says_so(client, login):
    login()
    assert "No such plan." in text_of(client.post("/plans/999/retire", follow_redirects=True))
    assert client.get("/plans/999/edit").status_code == 404


def test_a_retired_plan_is_not_offered_to_new_subscriptions(client, login):
    login()
    customer = CustomerFactory()
    PlanFactory(name="Fibre 300", code="FIBRE-300")
    retired = PlanFactory(name="Legacy DSL", code="LEGACY-8")
    assert "Legacy DSL" in text_of(client.get(f"/customers/{customer.id}/subscriptions/new"))  # cache warmed

    client.post(f"/plans/{retired.id}/retire")

    form = text_of(client.get(f"/customers/{customer.id}/subscriptions/new"))
    assert "Fibre 300" in form and "Legacy DSL" not in form
    response = client.post(f"/customers/{customer.id}/subscriptions/new",
                           data={"plan_id": retired.id, "start_date": today().isoformat()})
    assert response.status_code == 200 and "Not a valid choice." in text_of(response)
    with pytest.raises(BusinessRuleViolation, match="retired"):
        subscription_service.add_subscription(customer.id, retired.id, today())
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(Subscription)) == 0


# --- list ---------------------------------------------------------------------------------------------------


def test_the_list_shows_how_many_live_subscriptions_each_plan_has(client, login):
    login("readonly")
    busy, quiet = PlanFactory(code="BUSY"), PlanFactory(code="QUIET")
    SubscriptionFactory.create_batch(2, plan=busy)
    SubscriptionFactory(plan=busy, status="suspended", suspension_reason="manual")
    SubscriptionFactory(plan=busy, status="cancelled", pppoe_username=None)

    response = client.get("/plans/")

    assert f'plan={busy.id}">3</a>' in plan_row(response, "BUSY")
    assert f'plan={quiet.id}">0</a>' in plan_row(response, "QUIET")
    assert "/edit" not in text_of(response)   # read-only staff see no edit buttons


def test_more_than_fifty_plans_are_paged(client, login):
    login()
    for i in range(55):
        PlanFactory(code=f"P-{i:02d}", monthly_price_cents=1000 + i)

    first, second = client.get("/plans/"), client.get("/plans/?page=2")

    assert len(codes_listed(first)) == 50 and "Page 1 of 2" in text_of(first)
    assert len(codes_listed(second)) == 5 and "Page 2 of 2" in text_of(second)
    assert sorted(codes_listed(first) + codes_listed(second)) == [f"P-{i:02d}" for i in range(55)]
    assert codes_listed(first)[:2] == ["P-00", "P-01"]   # cheapest first


def test_a_few_plans_need_no_pager(client, login):
    login()
    PlanFactory.create_batch(3)
    response = client.get("/plans/")
    assert len(codes_listed(response)) == 3 and "Page 1 of" not in text_of(response)


def test_no_plans_shows_an_empty_state(client, login):
    login("billing")
    response = client.get("/plans/")
    assert response.status_code == 200
    assert "No plans yet" in text_of(response) and "Create the first plan" in text_of(response)


def test_a_page_number_past_the_end_lands_on_the_last_page(client, login):
    login("readonly")
    PlanFactory(code="ONLY-ONE")
    response = client.get("/plans/?page=99")
    assert response.status_code == 302 and response.headers["Location"].endswith("/plans/?page=1")
    assert "ONLY-ONE" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_the_plan_page_shows_its_history(client, login):
    login("billing")
    plan = PlanFactory(name="Fiber 200")
    assert client.post(f"/plans/{plan.id}/retire").status_code == 302
    page = client.get(f"/plans/{plan.id}/edit").get_data(as_text=True)
    assert "plan.retire" in page

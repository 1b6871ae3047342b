"""Network pages: an admin keeps the routers (NAS) list and the suspension policy; planners keep a plan's RADIUS
attributes. A router's secret is typed once and never shown again, and what is saved is what FreeRADIUS answers."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CoaRequest, GroupAttribute, Nas, PlanAttribute, SuspensionPolicy
from isp_admin.services.customers import subscriptions
from isp_admin.services.network import credentials
from tests.factories import PlanFactory, SubscriptionFactory

SECRET = "typed-once-secret-42"
ROUTER = {"nasname": "192.0.2.1", "shortname": "bras-1", "type": "mikrotik", "secret": SECRET, "coa_port": "3799",
          "description": "Nairobi POP"}
SETTINGS = {"non_payment": "walled_garden", "manual": "reject", "vacation": "reject",
            "walled_garden_pool": "walled-garden", "walled_garden_rate": "256k/256k",
            "walled_garden_address_list": "suspended", "reject_message": "Service suspended: please contact us."}


def text_of(response) -> str:
    return response.get_data(as_text=True)


def routers() -> list[Nas]:
    return list(db.session.scalars(select(Nas).order_by(Nas.id)))


def events(prefix: str = "") -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action.startswith(prefix))
                                   .order_by(AuditEvent.id)))


# --- routers ---------------------------------------------------------------------------------------------------


def test_an_admin_adds_a_router_whose_secret_is_never_shown_again(client, login):
    login()
    response = client.post("/network/routers/new", data={**ROUTER, "nasname": "2001:DB8::1"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/network/routers")

    [router] = routers()
    assert (router.nasname, router.secret, router.coa_port) == ("2001:db8::1", SECRET, 3799)
    listing = client.get("/network/routers")
    page = text_of(listing)
    assert "Restart FreeRADIUS" in page and "2001:db8::1" in page and "bras-1" in page
    assert "read_clients" in page and "CoA port" in page
    edit = text_of(client.get(f"/network/routers/{router.id}/edit"))
    assert "A shared secret is set" in edit and "Leave empty to keep it" in edit
    for html in (page, edit):
        assert SECRET not in html
    assert SECRET not in json.dumps([[e.before, e.after] for e in events()])
    assert [e.action for e in events("nas.")] == ["nas.create"]


@pytest.mark.parametrize(("field", "typed", "message"), [
    ("nasname", "router.example", "An IPv4 or IPv6 address"),
    ("nasname", "192.0.2.256", "An IPv4 or IPv6 address"),
    ("secret", "short", "8 to 64 printable ASCII characters"),
    ("secret", "has a space in it", "8 to 64 printable ASCII characters"),
    ("secret", "k" * 10_000, "8 to 64 printable ASCII characters"),
    ("coa_port", "0", "A UDP port from 1 to 65535"),
    ("coa_port", "70000", "A UDP port from 1 to 65535"),
    ("coa_port", "port", "Not a valid integer value."),
    ("description", "d" * 10_000, "At most 200 characters."),
    ("shortname", "", "This field is required."),
])
def test_a_bad_router_is_sent_back_with_the_error_and_the_typed_secret_is_not_echoed(client, login, field, typed,
                                                                                    message):
    login()
    response = client.post("/network/routers/new", data={**ROUTER, field: typed})
    assert response.status_code == 200 and message in text_of(response)
    assert SECRET not in text_of(response) and routers() == [] and events("nas.") == []


def test_a_nul_byte_is_refused_at_the_edge(client, login):
    login()
    assert client.post("/network/routers/new", data={**ROUTER, "shortname": "bras\x00"}).status_code == 400
    assert routers() == []


def test_the_same_address_twice_is_a_form_error_not_a_crash(client, login):
    login()
    client.post("/network/routers/new", data=ROUTER)
    response = client.post("/network/routers/new", data={**ROUTER, "shortname": "bras-1b", "nasname": "192.0.2.1"})
    assert response.status_code == 200 and "Already in the list." in text_of(response)
    assert len(routers()) == 1


def test_an_empty_secret_keeps_the_stored_one_and_a_typed_one_replaces_it(client, login):
    login()
    client.post("/network/routers/new", data=ROUTER)
    router_id = routers()[0].id
    assert client.post(f"/network/routers/{router_id}/edit",
                       data={**ROUTER, "secret": "", "type": "cisco"}).status_code == 302
    assert (routers()[0].secret, routers()[0].type) == (SECRET, "cisco")
    assert client.post(f"/network/routers/{router_id}/edit",
                       data={**ROUTER, "secret": "replacement-secret"}).status_code == 302
    assert routers()[0].secret == "replacement-secret"
    assert [e.after for e in events("nas.update")] == [{"type": "cisco"}, {"type": "mikrotik", "secret": "changed"}]
    assert "replacement-secret" not in text_of(client.get(f"/network/routers/{router_id}/edit"))


def test_a_router_awaiting_a_coa_answer_is_not_removed(client, login):
    login()
    client.post("/network/routers/new", data=ROUTER)
    router = routers()[0]
    db.session.add(CoaRequest(nas_id=router.id, nas_address=router.nasname, kind="disconnect", reason="rejected",
                              status="pending"))
    db.session.commit()
    response = client.post(f"/network/routers/{router.id}/delete", follow_redirects=True)
    assert "still pending" in text_of(response) and len(routers()) == 1

    db.session.execute(CoaRequest.__table__.update().values(status="acked"))
    db.session.commit()
    response = client.post(f"/network/routers/{router.id}/delete", follow_redirects=True)
    assert "Router removed." in text_of(response) and routers() == []
    assert client.post("/network/routers/999/delete").status_code == 302  # gone already: a flash, not a crash


def test_other_roles_see_the_routers_but_cannot_change_them(client, login):
    db.session.add(Nas(nasname="192.0.2.1", shortname="bras-1", type="mikrotik", secret=SECRET))
    db.session.commit()
    login("support")
    page = text_of(client.get("/network/routers"))
    assert "bras-1" in page and SECRET not in page and "Add router" not in page
    assert client.post("/network/routers/new", data={**ROUTER, "nasname": "192.0.2.9"}).status_code == 403


# --- policy ------------------------------------------------------------------------------------------------------


def test_the_policy_page_explains_each_choice_and_is_read_only_for_other_roles(client, login):
    login("billing")
    page = text_of(client.get("/network/settings"))
    assert "Walled garden" in page and "Access-Reject" in page and "Paused for a holiday" in page
    assert "disabled" in page and "Save policy" not in page and 'value="256k/256k"' in page
    assert client.post("/network/settings", data={**SETTINGS, "vacation": "walled_garden"}).status_code == 403


def test_an_unusable_value_on_the_policy_page_is_shown_on_its_field_and_nothing_changes(client, login):
    login()
    response = client.post("/network/settings", data={**SETTINGS, "vacation": "walled_garden",
                                                       "walled_garden_rate": "as fast as possible"})
    assert response.status_code == 200 and "MikroTik&#39;s rate, upload first" in text_of(response)
    assert db.session.scalar(select(SuspensionPolicy.action).where(SuspensionPolicy.reason == "vacation")) == "reject"


def test_a_group_attribute_freeradius_does_not_know_is_refused_on_the_form(client, login):
    login()
    data = {"groupname": "walled-garden", "kind": "reply", "attribute": "Made-Up-Attribute", "op": ":=",
            "value": "1"}
    response = client.post("/network/settings/attributes", data=data)
    if "FreeRADIUS&#39;s dictionary has no such attribute" not in text_of(response):
        pytest.skip("FreeRADIUS's dictionaries are not installed here")
    assert db.session.scalar(select(func.count()).select_from(GroupAttribute)
                             .where(GroupAttribute.attribute == "Made-Up-Attribute")) == 0
    response = client.post("/network/settings/attributes/remove",
                           data={"groupname": "rejected", "kind": "check", "attribute": "Auth-Type"},
                           follow_redirects=True)
    assert "it stays" in text_of(response)


def test_the_walled_garden_rate_edited_on_the_page_is_what_freeradius_sends(client, login, freeradius):
    sub = SubscriptionFactory(pppoe_username="zoe")
    db.session.commit()
    password = credentials.set_password(sub.id)
    subscriptions.suspend(sub.id, "vacation")
    db.session.commit()
    nas = freeradius.client()
    assert not nas.authenticate("zoe", password).accepted

    login()
    response = client.post("/network/settings", data={**SETTINGS, "vacation": "walled_garden",
                                                       "walled_garden_rate": "128k/512k"})
    assert response.status_code == 302
    answer = nas.authenticate("zoe", password)
    assert answer.accepted and answer.first("Mikrotik-Rate-Limit") == "128k/512k"
    assert answer.first("Framed-Pool") == "walled-garden"
    assert [e.action for e in events("network.")] == ["network.policy", "network.group_attribute_update"]


# --- a plan's RADIUS attributes ----------------------------------------------------------------------------------


def test_a_planner_adds_and_removes_a_plan_attribute_that_reaches_the_access_accept(client, login, freeradius):
    plan = PlanFactory(code="HOME50", download_mbps=50, upload_mbps=10)
    sub = SubscriptionFactory(plan=plan, pppoe_username="zoe")
    db.session.commit()
    password = credentials.set_password(sub.id)
    db.session.commit()
    login("billing")
    page = text_of(client.get(f"/plans/{plan.id}/edit"))
    assert "RADIUS attributes" in page and "10M/50M" in page and "plan-HOME50" in page

    response = client.post(f"/plans/{plan.id}/attributes", data={"kind": "reply", "attribute": "session-timeout",
                                                                  "op": ":=", "value": "3600"})
    assert response.status_code == 302
    assert freeradius.client().authenticate("zoe", password).first("Session-Timeout") == 3600
    assert "Session-Timeout" in text_of(client.get(f"/plans/{plan.id}/edit"))

    response = client.post(f"/plans/{plan.id}/attributes", data={"kind": "reply", "attribute": "Session-Timeout",
                                                                  "op": ":=", "value": "an hour"})
    assert response.status_code == 200 and "A whole number from 0 to 4294967295" in text_of(response)
    assert client.post(f"/plans/{plan.id}/attributes/remove",
                       data={"kind": "reply", "attribute": "Session-Timeout"}).status_code == 302
    assert db.session.scalar(select(func.count()).select_from(PlanAttribute)) == 0
    assert freeradius.client().authenticate("zoe", password).first("Session-Timeout") is None
    assert [e.action for e in events("plan.radius")] == ["plan.radius_attribute_add", "plan.radius_attribute_remove"]
    history = text_of(client.get(f"/plans/{plan.id}/edit"))
    assert "plan.radius_attribute_remove" in history


def test_support_staff_cannot_change_a_plans_attributes(client, login):
    plan = PlanFactory()
    login("support")
    response = client.post(f"/plans/{plan.id}/attributes", data={"kind": "reply", "attribute": "Session-Timeout",
                                                                  "op": ":=", "value": "3600"})
    assert response.status_code == 403
    assert db.session.scalar(select(func.count()).select_from(PlanAttribute)) == 0

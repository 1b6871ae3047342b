"""Routers (NAS) and the ISP's network policy: what staff may store, what they may not, and what the real
FreeRADIUS then answers. A row FreeRADIUS cannot parse fails every login it applies to, so the service refuses it."""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
from pyrad import packet
from pyrad.client import Client, Timeout
from pyrad.dictionary import Dictionary
from sqlalchemy import func, select

from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CoaRequest, GroupAttribute, Nas, PlanAttribute, SuspensionPolicy
from isp_admin.services.customers import subscriptions
from isp_admin.services.network import credentials, nas, settings
from isp_admin.unit_of_work import commit_once
from tests.factories import PlanFactory, SubscriptionFactory
from tests.support import radius

SECRET = "s3cret-for-bras-1"
ROUTER = {"nasname": "192.0.2.1", "shortname": "bras-1", "type": "mikrotik", "secret": SECRET, "coa_port": 3799,
          "description": "Nairobi POP"}


def audit_rows(prefix: str = "") -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action.startswith(prefix))
                                   .order_by(AuditEvent.id)))


def audit_text() -> str:
    return json.dumps([[e.action, e.before, e.after] for e in audit_rows()])


def refused(action, *args, **kwargs) -> dict:
    with pytest.raises(Invalid) as caught:
        action(*args, **kwargs)
    db.session.rollback()
    return caught.value.details


# --- routers ---------------------------------------------------------------------------------------------------


def test_a_router_is_added_with_its_address_normalised_and_audited_without_its_secret(app):
    router = nas.create_router(**{**ROUTER, "nasname": " 2001:DB8::0001 "})
    db.session.commit()

    assert router.nasname == "2001:db8::1" and router.secret_set and not hasattr(router, "secret")
    assert db.session.scalar(select(Nas.secret)) == SECRET
    [event] = audit_rows("nas.")
    assert event.action == "nas.create" and event.after["nasname"] == "2001:db8::1"
    assert "secret" not in event.after and SECRET not in audit_text()


def test_an_ipv4_mapped_address_is_the_ipv4_router(app):
    assert nas.create_router(**{**ROUTER, "nasname": "::ffff:192.0.2.7"}).nasname == "192.0.2.7"


@pytest.mark.parametrize(("field", "typed"), [
    ("nasname", "bras-1.example"), ("nasname", "192.0.2.0/24"), ("nasname", "192.0.2.300"), ("nasname", ""),
    ("nasname", "0.0.0.0"), ("nasname", "224.0.0.1"), ("nasname", "fe80::1%eth0"), ("nasname", "1" * 10_000),
    ("secret", "short"), ("secret", "with a space"), ("secret", "x" * 65), ("secret", "nul\x00inside-it"),
    ("secret", "kibibytes" * 1200), ("secret", "tést-secret-é"), ("secret", ""),
    ("shortname", ""), ("shortname", "x" * 33), ("shortname", "bras\x00"), ("shortname", "two\nlines"),
    ("description", "d" * 10_000), ("description", "nul\x00"),
    ("coa_port", 0), ("coa_port", 70000), ("coa_port", -1), ("coa_port", "3799"), ("coa_port", True),
    ("type", "huawei"),
])
def test_bad_router_input_is_refused_on_its_field(app, field, typed):
    assert field in refused(nas.create_router, **{**ROUTER, field: typed})
    assert db.session.scalar(select(func.count()).select_from(Nas)) == 0 and audit_rows() == []


def test_the_same_address_twice_is_a_clean_conflict(app):
    nas.create_router(**ROUTER)
    db.session.commit()
    with pytest.raises(Conflict) as caught:
        nas.create_router(**{**ROUTER, "shortname": "other", "nasname": "192.0.2.1"})
    assert caught.value.details == {"nasname": "Already in the list."}


def test_two_staff_adding_the_same_router_at_once_get_one_row_and_one_clean_refusal(app, monkeypatch):
    # Both pass the duplicate check before either inserts: only the unique constraint can stop the second.
    both_checked = threading.Barrier(2, timeout=10)
    check = nas._ensure_free

    def check_then_wait(*args):
        check(*args)
        both_checked.wait()

    monkeypatch.setattr(nas, "_ensure_free", check_then_wait)
    outcomes = []

    def add(name):
        with app.app_context():
            try:
                commit_once(nas.create_router, **{**ROUTER, "shortname": name})
                outcomes.append("added")
            except Conflict as exc:
                outcomes.append(exc.details)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=add, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert sorted(outcomes, key=str) == sorted(["added", {"nasname": "Already in the list."}], key=str)
    assert db.session.scalar(select(func.count()).select_from(Nas)) == 1
    assert [e.action for e in audit_rows()] == ["nas.create"]


def test_an_edit_keeps_the_secret_unless_a_new_one_is_typed_and_audits_only_that_it_changed(app):
    router = nas.create_router(**ROUTER)
    db.session.commit()

    nas.update_router(router.id, **{**ROUTER, "secret": "", "coa_port": 1700})
    db.session.commit()
    assert db.session.scalar(select(Nas.secret)) == SECRET
    nas.update_router(router.id, **{**ROUTER, "secret": None, "coa_port": 1700})  # nothing changed: no event
    nas.update_router(router.id, **{**ROUTER, "secret": "a-brand-new-secret", "coa_port": 1700})
    db.session.commit()

    assert db.session.scalar(select(Nas.secret)) == "a-brand-new-secret"
    updates = audit_rows("nas.update")
    assert [(e.before, e.after) for e in updates] == [({"coa_port": 3799}, {"coa_port": 1700}),
                                                      ({}, {"secret": "changed"})]
    assert SECRET not in audit_text() and "a-brand-new-secret" not in audit_text()
    assert "secret" in refused(nas.update_router, router.id, **{**ROUTER, "secret": "short"})


def test_a_router_with_pending_coa_requests_is_kept_and_one_with_only_history_is_removed(app):
    router = nas.create_router(**ROUTER)
    request = CoaRequest(nas_id=router.id, nas_address=router.nasname, kind="disconnect", reason="rejected",
                         status="pending")
    db.session.add(request)
    db.session.commit()
    assert nas.list_routers()[0].pending_requests == 1

    with pytest.raises(BusinessRuleViolation, match="1 Disconnect/CoA request"):
        nas.delete_router(router.id)
    db.session.rollback()

    request.status = "failed"
    db.session.commit()
    nas.delete_router(router.id)
    db.session.commit()
    db.session.expire_all()
    assert db.session.get(CoaRequest, request.id).nas_id is None  # the history keeps its address
    [event] = audit_rows("nas.delete")
    assert event.before["nasname"] == "192.0.2.1" and "secret" not in event.before
    with pytest.raises(NotFound):
        nas.delete_router(router.id)


# --- attributes: what FreeRADIUS could not read is refused ---------------------------------------------------


@pytest.mark.parametrize(("kind", "attribute", "op", "value", "field"), [
    ("reply", "Made-Up-Attribute", ":=", "x", "attribute"),
    ("reply", "1Bad", ":=", "x", "attribute"),
    ("reply", "Attr-26.14988.8", ":=", "2M/3M", "attribute"),
    ("reply", "Bad Name", ":=", "x", "attribute"),
    ("reply", "A" * 65, ":=", "x", "attribute"),
    ("check", "Auth-Type", ":=", "Accept", "attribute"),          # would let any password in
    ("check", "Cleartext-Password", ":=", "same-for-all", "attribute"),
    ("reply", "Session-Timeout", ":=", "abc", "value"),
    ("reply", "Session-Timeout", ":=", "99999999999", "value"),   # FreeRADIUS would silently wrap it
    ("reply", "Framed-IP-Address", ":=", "example.com", "value"),
    ("reply", "Service-Type", ":=", "Nope", "value"),
    ("check", "Expiration", ":=", "garbage", "value"),
    ("reply", "Mikrotik-Rate-Limit", ":=", "fast", "value"),
    ("reply", "Framed-Pool", ":=", "pool with spaces", "value"),
    ("reply", "Reply-Message", ":=", "`%{exec:/usr/bin/id}`", "value"),
    ("reply", "Reply-Message", ":=", "nul\x00byte", "value"),
    ("reply", "Reply-Message", ":=", "two\nlines", "value"),
    ("reply", "Reply-Message", ":=", "é" * 127, "value"),          # 254 bytes
    ("reply", "Reply-Message", ":=", "x" * 10_000, "value"),
    ("reply", "Reply-Message", ":=", "", "value"),
    ("reply", "Reply-Message", "==", "x", "op"),                  # FreeRADIUS drops a comparison in a reply
    ("reply", "Reply-Message", "=>", "x", "op"),
    ("sideways", "Reply-Message", ":=", "x", "kind"),
])
def test_an_attribute_freeradius_could_not_use_is_refused(app, kind, attribute, op, value, field):
    assert field in refused(settings.check_attribute, kind, attribute, op, value)


def test_names_are_spelled_as_freeradius_spells_them(app):
    if not settings.radius_dictionary().complete:
        pytest.skip("FreeRADIUS's dictionaries are not installed here")
    assert settings.check_attribute("reply", "session-timeout", ":=", " 3600 ") == ("Session-Timeout", ":=", "3600")
    assert settings.check_attribute("reply", "Service-Type", ":=", "Framed-User")[2] == "Framed-User"
    assert settings.check_attribute("reply", "Cisco-AVPair", "+=", "ip:addr-pool=gold")[0] == "Cisco-AVPair"
    assert settings.check_attribute("check", "Expiration", ":=", "January 1 2030")[0] == "Expiration"


def test_without_freeradius_dictionaries_the_format_rule_and_our_own_types_still_hold(app, monkeypatch, tmp_path):
    monkeypatch.setattr(settings, "DICTIONARY_DIR", tmp_path)  # a web host without freeradius-common
    assert not settings.radius_dictionary().complete
    assert settings.check_attribute("reply", "Huawei-Input-Average-Rate", ":=", "1000")[0] == \
        "Huawei-Input-Average-Rate"
    assert settings.check_attribute("reply", "mikrotik-rate-limit", ":=", "1M/2M")[0] == "Mikrotik-Rate-Limit"
    assert "value" in refused(settings.check_attribute, "reply", "Session-Timeout", ":=", "abc")
    assert "attribute" in refused(settings.check_attribute, "reply", "Bad_Name", ":=", "1")


# --- groups and plans ----------------------------------------------------------------------------------------


def test_group_attributes_are_added_once_removed_with_an_audit_and_the_reject_stays(app):
    row = settings.add_group_attribute("walled-garden", "reply", "session-timeout", ":=", "600")
    db.session.commit()
    assert row.attribute == "Session-Timeout"
    with pytest.raises(Conflict):
        settings.add_group_attribute("walled-garden", "reply", "Session-Timeout", ":=", "900")
    db.session.rollback()
    assert "groupname" in refused(settings.add_group_attribute, "everyone", "reply", "Session-Timeout", ":=", "1")

    settings.remove_group_attribute("walled-garden", "reply", "Session-Timeout")
    db.session.commit()
    with pytest.raises(BusinessRuleViolation):
        settings.remove_group_attribute("rejected", "check", "Auth-Type")
    db.session.rollback()
    with pytest.raises(NotFound):
        settings.remove_group_attribute("walled-garden", "reply", "Session-Timeout")
    assert [e.action for e in audit_rows("network.")] == ["network.group_attribute_add",
                                                          "network.group_attribute_remove"]


def test_saving_the_settings_changes_only_what_differs_and_an_empty_field_removes_its_attribute(app):
    values = settings.current_settings()
    assert values == {"non_payment": "walled_garden", "manual": "reject", "vacation": "reject",
                      "walled_garden_pool": "walled-garden", "walled_garden_rate": "256k/256k",
                      "walled_garden_address_list": "suspended",
                      "reject_message": "Service suspended: please contact us."}
    policies = {r: values[r] for r in ("non_payment", "manual", "vacation")}
    fixed = {k: v for k, v in values.items() if k not in policies}
    assert settings.save_settings(policies, **fixed) == 0

    changed = settings.save_settings({**policies, "vacation": "walled_garden"},
                                     **{**fixed, "walled_garden_rate": "1M/1M", "walled_garden_address_list": ""})
    db.session.commit()
    assert changed == 3
    assert settings.current_settings()["walled_garden_address_list"] is None
    assert [e.action for e in audit_rows("network.")] == [
        "network.policy", "network.group_attribute_update", "network.group_attribute_remove"]
    errors = refused(settings.save_settings, {**policies, "manual": "drop"},
                     **{**fixed, "walled_garden_rate": "fast", "reject_message": "x" * 300})
    assert set(errors) == {"manual", "walled_garden_rate", "reject_message"}


def test_plan_attributes_are_one_per_name_whatever_its_case_and_audited_on_the_plan(app):
    plan = PlanFactory(code="HOME50", download_mbps=50, upload_mbps=10)
    settings.add_plan_attribute(plan.id, "reply", "Session-Timeout", ":=", "3600")
    db.session.commit()
    with pytest.raises(Conflict):
        settings.add_plan_attribute(plan.id, "reply", "SESSION-TIMEOUT", ":=", "60")
    db.session.rollback()
    radius_view = settings.plan_radius(plan.id)
    assert (radius_view.group, radius_view.derived_rate, radius_view.rate_overridden) == ("plan-HOME50", "10M/50M",
                                                                                          False)
    settings.add_plan_attribute(plan.id, "reply", "mikrotik-rate-limit", ":=", "20M/60M")
    assert settings.plan_radius(plan.id).rate_overridden
    settings.remove_plan_attribute(plan.id, "reply", "session-timeout")
    db.session.commit()
    assert [a.attribute for a in db.session.scalars(select(PlanAttribute))] == ["Mikrotik-Rate-Limit"]
    events = audit_rows("plan.radius")
    assert [(e.action, e.entity_type, e.entity_id) for e in events] == [
        ("plan.radius_attribute_add", "plans", plan.id), ("plan.radius_attribute_add", "plans", plan.id),
        ("plan.radius_attribute_remove", "plans", plan.id)]
    with pytest.raises(NotFound):
        settings.add_plan_attribute(plan.id + 100, "reply", "Session-Timeout", ":=", "1")


# --- with the real FreeRADIUS --------------------------------------------------------------------------------


@pytest.fixture
def zoe(app, freeradius):
    """A customer on HOME50 (50 down / 10 up), login zoe with a password, and a NAS talking to FreeRADIUS."""
    plan = PlanFactory(code="HOME50", download_mbps=50, upload_mbps=10)
    sub = SubscriptionFactory(plan=plan, pppoe_username="zoe")
    db.session.commit()
    password = credentials.set_password(sub.id)
    db.session.commit()
    client = freeradius.client()
    return {"plan": plan, "sub": sub, "login": lambda: client.authenticate("zoe", password)}


def test_a_policy_change_takes_effect_at_the_next_authentication(zoe):
    subscriptions.suspend(zoe["sub"].id, "vacation")
    db.session.commit()
    assert not zoe["login"]().accepted

    commit_once(settings.save_settings, {"vacation": "walled_garden"})
    answer = zoe["login"]()
    assert answer.accepted and answer.first("Framed-Pool") == "walled-garden"
    assert db.session.scalar(select(SuspensionPolicy.action).where(SuspensionPolicy.reason == "vacation")) == \
        "walled_garden"


def test_the_walled_garden_and_reject_attributes_edited_are_what_freeradius_sends(zoe):
    subscriptions.suspend(zoe["sub"].id, "manual")
    db.session.commit()
    commit_once(settings.save_settings, {"manual": "reject"}, reject_message="Call 0700 000 000 to reconnect.")
    answer = zoe["login"]()
    assert not answer.accepted and answer.first("Reply-Message") == "Call 0700 000 000 to reconnect."

    commit_once(settings.save_settings, {"manual": "walled_garden"}, walled_garden_rate="512k/1M",
                walled_garden_address_list="")
    answer = zoe["login"]()
    assert answer.accepted and answer.first("Mikrotik-Rate-Limit") == "512k/1M"
    assert answer.first("Mikrotik-Address-List") is None and answer.first("Framed-Pool") == "walled-garden"


def test_a_plan_attribute_reaches_the_access_accept_and_a_rate_override_replaces_the_derived_rate(zoe):
    plan_id = zoe["plan"].id
    commit_once(settings.add_plan_attribute, plan_id, "reply", "Session-Timeout", ":=", "3600")
    answer = zoe["login"]()
    assert answer.first("Session-Timeout") == 3600 and answer.first("Mikrotik-Rate-Limit") == "10M/50M"

    commit_once(settings.add_plan_attribute, plan_id, "reply", "Mikrotik-Rate-Limit", ":=", "20M/100M")
    assert zoe["login"]().attributes["Mikrotik-Rate-Limit"] == ["20M/100M"]
    commit_once(settings.remove_plan_attribute, plan_id, "reply", "Mikrotik-Rate-Limit")
    assert zoe["login"]().attributes["Mikrotik-Rate-Limit"] == ["10M/50M"]


@pytest.mark.parametrize(("attribute", "value"), [("Made-Up-Attribute", "x"), ("Session-Timeout", "abc")])
def test_a_row_freeradius_cannot_parse_rejects_every_login_of_the_plan_which_is_why_it_is_refused(
        zoe, attribute, value):
    assert zoe["login"]().accepted
    # Written past the service, as a hand-made SQL row would be: FreeRADIUS fails the whole request.
    db.session.add(PlanAttribute(plan_id=zoe["plan"].id, kind="reply", attribute=attribute, op=":=", value=value))
    db.session.commit()
    assert not zoe["login"]().accepted
    db.session.execute(PlanAttribute.__table__.delete())
    db.session.commit()

    if settings.radius_dictionary().complete or attribute == "Session-Timeout":
        assert refused(settings.add_plan_attribute, zoe["plan"].id, "reply", attribute, ":=", value)
    assert zoe["login"]().accepted


def test_a_backquoted_value_would_be_expanded_by_freeradius_so_it_is_refused(zoe):
    db.session.add(GroupAttribute(groupname="walled-garden", kind="reply", attribute="Reply-Message", op=":=",
                                  value="`%{User-Name}`"))
    subscriptions.suspend(zoe["sub"].id, "manual")
    db.session.commit()
    commit_once(settings.save_settings, {"manual": "walled_garden"})
    assert zoe["login"]().first("Reply-Message") == "zoe"  # a template, run per request (%{exec:…} runs programs)
    assert "value" in refused(settings.add_plan_attribute, zoe["plan"].id, "reply", "Reply-Message", ":=",
                              "`%{exec:/usr/bin/id}`")


def _ask_from(address: str, auth_port: int, secret: str, password: str):
    """An Access-Request for zoe sent from another loopback address, as a second router would."""
    client = Client(server="127.0.0.1", authport=auth_port, secret=secret.encode(),
                    dict=Dictionary(str(radius.DICTIONARY)))
    client.timeout, client.retries = 1, 1
    client.bind((address, 0))
    request = client.CreateAuthPacket(code=packet.AccessRequest, User_Name="zoe")
    request["NAS-IP-Address"] = address
    request["User-Password"] = request.PwCrypt(password)
    request.add_message_authenticator()
    try:
        return client.SendPacket(request).code
    except Timeout:
        return None  # FreeRADIUS ignores a request from a client it does not know, or with the wrong secret
    finally:
        client._CloseSocket()


def test_a_router_added_is_answered_once_freeradius_restarts_and_only_with_its_secret(app, freeradius, backends):
    plan = PlanFactory()
    sub = SubscriptionFactory(plan=plan, pppoe_username="zoe")
    db.session.commit()
    password = credentials.set_password(sub.id)
    db.session.commit()
    workdir = Path(tempfile.mkdtemp(prefix="isp-admin-freeradius-"))
    server = radius.FreeRadius(backends["database_url"], workdir).start()
    try:
        assert _ask_from("127.0.0.2", server.auth_port, "router-two-secret", password) is None
        commit_once(nas.create_router, **{**ROUTER, "nasname": "127.0.0.2", "secret": "router-two-secret"})
        # FreeRADIUS reads its clients at start (read_clients): a running one still ignores the new router.
        assert _ask_from("127.0.0.2", server.auth_port, "router-two-secret", password) is None
        server.stop()
        server = radius.FreeRadius(backends["database_url"], workdir).start()
        assert _ask_from("127.0.0.2", server.auth_port, "router-two-secret", password) == packet.AccessAccept
        assert _ask_from("127.0.0.2", server.auth_port, "not-its-secret-x", password) is None
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

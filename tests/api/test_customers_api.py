"""/api/customers/: create, read, replace, update and close customers through the HTTP API only."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Customer
from isp_admin.services.platform.clock import today
from tests.api.helpers import assert_error, assert_ok, bearer
from tests.factories import CustomerFactory, SubscriptionFactory

WRITE = ("support", "read,write")
FULL = {"name": "Acme Farms Ltd", "email": "Accounts@Acme.example", "phone": "+254 700 111222",
        "service_address": "Plot 4, Ngong Road", "billing_address": "PO Box 1, Nairobi", "tax_id": "P051234567X",
        "notes": "Gate code 4411"}


@pytest.fixture
def writer():
    """Headers of a support user's token with the read and write scopes."""
    return bearer(*WRITE)


def customer_count() -> int:
    return db.session.scalar(select(func.count()).select_from(Customer))


def events(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def test_create_assigns_an_account_number_and_answers_201_with_its_location(client, writer):
    response = client.post("/api/customers/", json=FULL, headers=writer)
    data = assert_ok(response, 201)
    assert re.fullmatch(r"C\d{8}", data["account_number"])
    assert response.headers["Location"] == f"/api/customers/{data['id']}/"
    assert data["status"] == "active" and data["email"] == "accounts@acme.example"  # e-mail stored lower-case
    assert {k: data[k] for k in FULL if k != "email"} == {k: v for k, v in FULL.items() if k != "email"}

    stored = db.session.get(Customer, data["id"])
    assert stored.account_number == data["account_number"] and stored.name == "Acme Farms Ltd"
    (event,) = events("customer.create")
    assert event.actor_type == "token" and event.customer_id == stored.id and event.after["name"] == FULL["name"]
    assert client.get(response.headers["Location"], headers=writer).get_json()["data"] == data


def test_each_customer_gets_its_own_account_number(client, writer):
    numbers = {assert_ok(client.post("/api/customers/", json={"name": f"C {n}"}, headers=writer), 201)
               ["account_number"] for n in range(5)}
    assert len(numbers) == 5


def test_put_replaces_every_editable_field_and_omitted_ones_become_null(client, writer):
    customer_id = assert_ok(client.post("/api/customers/", json=FULL, headers=writer), 201)["id"]
    data = assert_ok(client.put(f"/api/customers/{customer_id}/", json={"name": "Acme Farms", "phone": "+1 555"},
                                headers=writer))
    assert data["name"] == "Acme Farms" and data["phone"] == "+1 555"
    for field in ("email", "service_address", "billing_address", "tax_id", "notes"):
        assert data[field] is None, field
    stored = db.session.get(Customer, customer_id)
    assert (stored.email, stored.notes, stored.tax_id) == (None, None, None)
    (event,) = events("customer.update")
    assert event.before["notes"] == "Gate code 4411" and event.after["notes"] is None


def test_put_needs_the_name(client, writer):
    customer = CustomerFactory()
    body = assert_error(client.put(f"/api/customers/{customer.id}/", json={"email": "a@b.example"}, headers=writer),
                        422, "VALIDATION_ERROR")
    assert "name" in body["error"]["details"]
    assert db.session.get(Customer, customer.id).email == customer.email


def test_patch_changes_only_the_fields_sent(client, writer):
    customer_id = assert_ok(client.post("/api/customers/", json=FULL, headers=writer), 201)["id"]
    data = assert_ok(client.patch(f"/api/customers/{customer_id}/", json={"notes": "Dog on site"}, headers=writer))
    assert data["notes"] == "Dog on site"
    assert {k: data[k] for k in ("name", "phone", "tax_id")} == {k: FULL[k] for k in ("name", "phone", "tax_id")}
    (event,) = events("customer.update")
    assert event.before == {"notes": "Gate code 4411"} and event.after == {"notes": "Dog on site"}
    # A PATCH that changes nothing records nothing.
    assert_ok(client.patch(f"/api/customers/{customer_id}/", json={"notes": "Dog on site"}, headers=writer))
    assert len(events("customer.update")) == 1


def test_patch_cannot_blank_the_name(client, writer):
    customer = CustomerFactory(name="Keep Me")
    for name in ("", "   "):
        body = assert_error(client.patch(f"/api/customers/{customer.id}/", json={"name": name}, headers=writer),
                            422, "VALIDATION_ERROR")
        assert "name" in body["error"]["details"]
    assert db.session.get(Customer, customer.id).name == "Keep Me"


@pytest.mark.parametrize("extra", [{"status": "closed"}, {"id": 5}, {"account_number": "C00000001"},
                                   {"created_at": "2020-01-01T00:00:00Z"}, {"search_text": "x"}])
def test_unknown_fields_are_refused_not_assigned(client, writer, extra):
    customer = CustomerFactory(name="Mass Assignment")
    field = next(iter(extra))
    for method, path in (("post", "/api/customers/"), ("put", f"/api/customers/{customer.id}/"),
                         ("patch", f"/api/customers/{customer.id}/")):
        response = getattr(client, method)(path, json={"name": "Changed", **extra}, headers=writer)
        body = assert_error(response, 422, "VALIDATION_ERROR")
        assert field in body["error"]["details"], (method, body)
    stored = db.session.get(Customer, customer.id)
    assert (stored.name, stored.status, stored.account_number) == ("Mass Assignment", "active",
                                                                   customer.account_number)
    assert customer_count() == 1


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@b.example", "a b@c.example", 5])
def test_a_bad_email_is_a_field_error(client, writer, email):
    body = assert_error(client.post("/api/customers/", json={"name": "X", "email": email}, headers=writer),
                        422, "VALIDATION_ERROR")
    assert "email" in body["error"]["details"]
    assert customer_count() == 0


@pytest.mark.parametrize("field", ["name", "notes", "phone", "service_address", "tax_id"])
def test_a_nul_byte_is_a_field_error_not_a_500(client, writer, field):
    customer = CustomerFactory()
    values = {"name": "Okay", field: "bad\x00value"}
    for method, path in (("post", "/api/customers/"), ("put", f"/api/customers/{customer.id}/"),
                         ("patch", f"/api/customers/{customer.id}/")):
        body = assert_error(getattr(client, method)(path, json=values, headers=writer), 422, "VALIDATION_ERROR")
        assert field in body["error"]["details"], method
    assert customer_count() == 1


def test_too_long_values_are_field_errors(client, writer):
    body = assert_error(client.post("/api/customers/", json={"name": "x" * 201, "tax_id": "t" * 41},
                                    headers=writer), 422, "VALIDATION_ERROR")
    assert set(body["error"]["details"]) == {"name", "tax_id"}


def test_a_non_object_body_is_a_validation_error(client, writer):
    for payload in ([], "text", 5, None):
        response = client.post("/api/customers/", json=payload, headers=writer)
        assert response.status_code in (400, 422), (payload, response.data)
        assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"
    assert customer_count() == 0


def test_delete_closes_the_account_and_keeps_the_row(client, writer):
    customer = CustomerFactory()
    SubscriptionFactory(customer=customer, status="cancelled", end_date=today(), pppoe_username=None)
    data = assert_ok(client.delete(f"/api/customers/{customer.id}/", headers=writer))
    assert data["status"] == "closed" and data["id"] == customer.id
    assert db.session.get(Customer, customer.id).status == "closed"
    (event,) = events("customer.close")
    assert event.before == {"status": "active"} and event.after == {"status": "closed"}
    body = assert_error(client.delete(f"/api/customers/{customer.id}/", headers=writer), 422,
                        "BUSINESS_RULE_VIOLATION")
    assert "already closed" in body["message"]


@pytest.mark.parametrize("status", ["active", "pending", "suspended"])
def test_delete_is_refused_while_a_subscription_is_live(client, writer, status):
    sub = SubscriptionFactory(status=status, suspension_reason="manual" if status == "suspended" else None)
    body = assert_error(client.delete(f"/api/customers/{sub.customer_id}/", headers=writer), 422,
                        "BUSINESS_RULE_VIOLATION")
    assert "live subscription" in body["message"]
    assert db.session.get(Customer, sub.customer_id).status != "closed"
    assert events("customer.close") == []


@pytest.mark.parametrize("issue", [False, True])
def test_delete_is_refused_while_an_invoice_is_open_or_draft(client, writer, issue):
    customer = CustomerFactory()
    billing = bearer("billing", "billing")
    response = client.post("/api/billing/invoices/", headers=billing, json={
        "customer_id": customer.id, "issue": issue, "lines": [{"description": "Router", "unit_price_cents": 500}]})
    assert response.status_code == 201
    body = assert_error(client.delete(f"/api/customers/{customer.id}/", headers=writer), 422,
                        "BUSINESS_RULE_VIOLATION")
    assert "invoices" in body["message"]
    assert db.session.get(Customer, customer.id).status == "active"


def test_a_closed_customer_can_still_be_read_and_edited(client, writer):
    customer = CustomerFactory(status="closed")
    assert assert_ok(client.get(f"/api/customers/{customer.id}/", headers=writer))["status"] == "closed"
    data = assert_ok(client.patch(f"/api/customers/{customer.id}/", json={"notes": "moved away"}, headers=writer))
    assert data["status"] == "closed" and data["notes"] == "moved away"


@pytest.mark.parametrize("customer_id", [0, 999_999, 2**31 - 1])
def test_unknown_customers_are_404(client, writer, customer_id):
    for method in ("get", "put", "patch", "delete"):
        response = getattr(client, method)(f"/api/customers/{customer_id}/", json={"name": "X"}, headers=writer)
        assert_error(response, 404, "NOT_FOUND")


def test_a_write_with_a_form_body_is_415(client, writer):
    response = client.post("/api/customers/", data={"name": "Form"}, headers=writer)
    body = assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "Content-Type" in body["error"]["details"]
    assert customer_count() == 0

"""Who may call which API route: a role x endpoint x method matrix, written out by hand, and object-level probes.

Staff roles see every customer by design: the model has no per-customer ownership (an ISP's staff serve all
its customers), so there is no "another user's customer" to hide. Object-level checks are therefore about
records that do not exist, or that belong to a different customer than the request names.
"""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import redis
from sqlalchemy import text

from isp_admin.extensions import db
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.billing import payments
from isp_admin.services.identity.tokens import allowed_scopes
from isp_admin.services.platform import job_runs
from isp_admin.services.platform.clock import today
from tests.api.helpers import assert_error, bearer
from tests.conftest import clean_context
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.support.queues import BULK_REDIS_DB, drop_queue

ROLES = ("admin", "billing", "support", "readonly")
EVERYONE = frozenset(ROLES)
STAFF_WHO_EDIT = frozenset({"admin", "billing", "support"})
MONEY = frozenset({"admin", "billing"})
NOT_IN_MATRIX = {"/api/openapi.json", "/api/docs/", "/api/postman.json"}  # public documents
LINE = {"description": "Roles check", "unit_price_cents": 1000}


@dataclass(frozen=True)
class Cell:
    """One route and method: the scope its token needs and the roles allowed to call it."""

    method: str
    path: str
    scope: str
    allowed: frozenset
    body: object = None  # a function of the world's ids, for a request that would succeed if allowed
    ids: dict = field(default_factory=dict)  # path variable -> the world id to use, when not the same name

    def url(self, world: dict) -> str:
        return re.sub(r"{(\w+)}", lambda m: str(world[self.ids.get(m.group(1), m.group(1))]), self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


MATRIX = [
    Cell("GET", "/api/customers/", "read", EVERYONE),
    Cell("POST", "/api/customers/", "write", STAFF_WHO_EDIT, lambda w: {"name": "Roles Check"}),
    Cell("GET", "/api/customers/{customer_id}/", "read", EVERYONE),
    Cell("PUT", "/api/customers/{customer_id}/", "write", STAFF_WHO_EDIT, lambda w: {"name": "Replaced"}),
    Cell("PATCH", "/api/customers/{customer_id}/", "write", STAFF_WHO_EDIT, lambda w: {"notes": "patched"}),
    Cell("DELETE", "/api/customers/{customer_id}/", "write", STAFF_WHO_EDIT, ids={"customer_id": "idle_customer_id"}),
    Cell("GET", "/api/subscriptions/", "read", EVERYONE),
    Cell("POST", "/api/subscriptions/", "write", STAFF_WHO_EDIT,
         lambda w: {"customer_id": w["customer_id"], "plan_id": w["plan_id"]}),
    Cell("GET", "/api/subscriptions/{subscription_id}/", "read", EVERYONE),
    Cell("PATCH", "/api/subscriptions/{subscription_id}/", "write", STAFF_WHO_EDIT,
         lambda w: {"cpe_mac": "00:11:22:33:44:55"}),
    Cell("POST", "/api/subscriptions/{subscription_id}/change-plan/", "write", STAFF_WHO_EDIT,
         lambda w: {"plan_id": w["spare_plan_id"]}),
    Cell("POST", "/api/subscriptions/{subscription_id}/suspend/", "write", STAFF_WHO_EDIT,
         lambda w: {"reason": "manual"}),
    Cell("POST", "/api/subscriptions/{subscription_id}/resume/", "write", STAFF_WHO_EDIT,
         ids={"subscription_id": "suspended_id"}),
    Cell("POST", "/api/subscriptions/{subscription_id}/approve-catch-up/", "billing", MONEY,
         ids={"subscription_id": "held_id"}),
    Cell("POST", "/api/subscriptions/{subscription_id}/cancel/", "write", STAFF_WHO_EDIT, lambda w: {}),
    Cell("GET", "/api/subscriptions/{subscription_id}/sessions/", "read", EVERYONE),
    Cell("GET", "/api/subscriptions/{subscription_id}/usage/", "read", EVERYONE),
    Cell("GET", "/api/plans/", "read", EVERYONE),
    Cell("POST", "/api/plans/", "write", MONEY, lambda w: {"code": "ROLES-1", "name": "Roles", "download_mbps": 10,
                                                           "upload_mbps": 2, "monthly_price_cents": 100}),
    Cell("GET", "/api/plans/{plan_id}/", "read", EVERYONE),
    Cell("PATCH", "/api/plans/{plan_id}/", "write", MONEY, lambda w: {"name": "Renamed"}),
    Cell("DELETE", "/api/plans/{plan_id}/", "write", MONEY, ids={"plan_id": "unused_plan_id"}),
    Cell("GET", "/api/billing/invoices/", "read", EVERYONE),
    Cell("POST", "/api/billing/invoices/", "billing", MONEY,
         lambda w: {"customer_id": w["customer_id"], "lines": [LINE]}),
    Cell("GET", "/api/billing/invoices/{invoice_id}/", "read", EVERYONE),
    Cell("PUT", "/api/billing/invoices/{invoice_id}/", "billing", MONEY, lambda w: {"lines": [LINE, LINE]},
         ids={"invoice_id": "draft_id"}),
    Cell("DELETE", "/api/billing/invoices/{invoice_id}/", "billing", MONEY, ids={"invoice_id": "spare_draft_id"}),
    Cell("POST", "/api/billing/invoices/{invoice_id}/issue/", "billing", MONEY, ids={"invoice_id": "draft_id"}),
    Cell("POST", "/api/billing/invoices/{invoice_id}/void/", "billing", MONEY, lambda w: {"reason": "roles"}),
    Cell("POST", "/api/billing/invoices/{invoice_id}/send/", "billing", MONEY),
    Cell("POST", "/api/billing/invoices/{invoice_id}/pay/", "billing", MONEY,
         lambda w: {"method": "cash", "amount_cents": 100}),
    Cell("GET", "/api/billing/payments/", "read", EVERYONE),
    Cell("POST", "/api/billing/payments/", "billing", MONEY,
         lambda w: {"customer_id": w["customer_id"], "amount_cents": 100, "method": "card"}),
    Cell("GET", "/api/billing/payments/{payment_id}/", "read", EVERYONE),
    Cell("POST", "/api/billing/payments/{payment_id}/reverse/", "billing", MONEY, lambda w: {"reason": "roles"}),
    Cell("GET", "/api/billing/stats/invoices/", "read", EVERYONE),
    Cell("GET", "/api/billing/stats/payments/", "read", EVERYONE),
    Cell("POST", "/api/billing/generate-invoice/", "billing", MONEY, lambda w: {"customer_id": w["customer_id"]}),
    Cell("POST", "/api/billing/bulk-generate/", "billing", MONEY, lambda w: {}),
    Cell("GET", "/api/billing/bulk-generate/{job_id}/", "read", EVERYONE),
]


@pytest.fixture
def app(make_app, backends, tmp_path):
    """The testing app, with background jobs on a queue of its own so allowed bulk-generate calls really start."""
    if not backends["redis_url"]:
        pytest.skip("needs Redis")
    url, queue = f"redis://127.0.0.1:6379/{BULK_REDIS_DB}", f"test-api-roles-{uuid.uuid4().hex[:8]}"
    with clean_context(make_app(REDIS_URL=url, RQ_QUEUE=queue, MAIL_OUTBOX_DIR=str(tmp_path / "outbox"))) as app:
        yield app
    drop_queue(redis.Redis.from_url(url), queue)


def make_world() -> dict:
    """One of each record a route acts on, made through the services (ids only)."""
    plan, spare = PlanFactory(), PlanFactory()
    customer = CustomerFactory(email="roles@mail.example")
    sub = SubscriptionFactory(customer=customer, plan=plan, start_date=today() - timedelta(days=3),
                              billing_day=today().day, next_bill_date=today())
    suspended = SubscriptionFactory(customer=customer, plan=plan, status="suspended", suspension_reason="manual")
    held = SubscriptionFactory(customer=customer, plan=plan, billing_hold_reason="40 periods due",
                               billing_held_on=today())
    draft = invoice_service.create_draft(customer.id, [LINE], today())
    issued = invoice_service.create_draft(customer.id, [LINE], today())
    invoice_service.issue(issued.id, today())
    payment, _ = payments.record_payment(customer.id, 500, "cash", today(), today())
    run = job_runs.start_run("generate_monthly_invoices", today(), dry_run=False, triggered_by="test")
    world = {"plan_id": plan.id, "spare_plan_id": spare.id, "unused_plan_id": PlanFactory().id,
             "customer_id": customer.id,
             "idle_customer_id": CustomerFactory().id, "subscription_id": sub.id, "suspended_id": suspended.id,
             "held_id": held.id,
             "draft_id": draft.id, "spare_draft_id": invoice_service.create_draft(customer.id, [LINE], today()).id,
             "invoice_id": issued.id, "payment_id": payment.id, "job_id": run.id}
    db.session.commit()
    return world


def row_counts() -> dict[str, int]:
    """The number of rows in every table, in one statement."""
    names = [table.name for table in db.metadata.sorted_tables]
    counts = db.session.execute(text("SELECT " + ", ".join(f"(SELECT count(*) FROM {name})" for name in names)))
    result = dict(zip(names, counts.one(), strict=True))
    db.session.rollback()
    return result


def call(client, cell: Cell, world: dict, headers: dict):
    body = cell.body(world) if cell.body else None
    return client.open(cell.url(world), method=cell.method, json=body, headers=headers)


def token_for(role: str) -> dict:
    """A token for a new user of `role` holding every scope the role allows."""
    return bearer(role, ",".join(allowed_scopes(role)))


@pytest.mark.parametrize("cell", MATRIX, ids=str)
def test_every_role_gets_exactly_its_permissions(client, cell):
    world = make_world()
    tokens = {role: token_for(role) for role in ROLES}  # made first: a new token is itself a row and an event
    other_scopes = ",".join(s for s in ("read", "write", "billing") if s != cell.scope)
    refused = [("no token", {}, 401, "AUTHENTICATION_REQUIRED"),
               (f"admin token without {cell.scope}", bearer("admin", other_scopes), 403, "PERMISSION_DENIED")]
    refused += [(role, tokens[role], 403, "PERMISSION_DENIED") for role in ROLES if role not in cell.allowed]
    before = row_counts()
    for who, headers, status, code in refused:
        response = call(client, cell, world, headers)
        assert response.status_code == status, (who, response.data[:300])
        assert_error(response, status, code)
        if status == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert row_counts() == before, who

    for role in ROLES:
        if role in cell.allowed:
            response = call(client, cell, world, tokens[role])
            assert response.status_code not in (401, 403), (role, response.data[:300])
            assert response.status_code < 500, (role, response.data[:300])


def test_the_first_allowed_call_succeeds(client):
    """The bodies in the matrix are real requests: as admin, each one works on a fresh world."""
    failures = []
    world = make_world()
    headers = token_for("admin")
    # Routes that consume their target go last, so each still finds the world it needs.
    last = {"DELETE", "cancel", "void", "reverse"}
    for cell in sorted(MATRIX, key=lambda c: any(word in str(c) for word in last)):
        response = call(client, cell, world, headers)
        if response.status_code not in (200, 201, 202):
            failures.append((str(cell), response.status_code, response.data[:200]))
    assert failures == []


def normalised(rule: str) -> str:
    """'/api/x/<id:thing_id>/' -> '/api/x/{thing_id}/', whatever the converter."""
    return re.sub(r"<(?:[^:<>]+:)?(\w+)>", r"{\1}", rule)


def test_the_matrix_covers_every_api_route_and_method(app):
    registered = {(method, normalised(rule.rule)) for rule in app.url_map.iter_rules()
                  if rule.rule.startswith("/api/") and rule.rule not in NOT_IN_MATRIX
                  for method in rule.methods - {"HEAD", "OPTIONS"}}
    in_matrix = {(cell.method, cell.path) for cell in MATRIX}
    assert len(in_matrix) == len(MATRIX), "a route is in the matrix twice"
    assert registered - in_matrix == set(), "routes missing from MATRIX"
    assert in_matrix - registered == set(), "MATRIX names routes the app does not have"


# --- object-level probes ----------------------------------------------------------------------------------------

def test_ids_that_do_not_exist_are_404_on_every_route_never_500(client):
    world = make_world()
    headers = bearer("admin", "read,write,billing")
    before = row_counts()
    for missing in (0, 2**31 - 1, 2**31, 2**63, 10**30):  # unused, the column's max, and beyond any integer column
        for cell in MATRIX:
            if "{" not in cell.path:
                continue
            variable = re.search(r"{(\w+)}", cell.path).group(1)
            response = call(client, cell, {**world, cell.ids.get(variable, variable): missing}, headers)
            assert response.status_code == 404, (missing, str(cell), response.data[:300])
            assert_error(response, 404, "NOT_FOUND")
    assert row_counts() == before


def test_a_write_may_not_name_another_customers_invoice(client):
    world = make_world()
    other = CustomerFactory()
    headers = bearer("billing", "read,write,billing")
    before = row_counts()
    body = assert_error(client.post("/api/billing/payments/", headers=headers, json={
        "customer_id": other.id, "amount_cents": 100, "method": "cash", "invoice_id": world["invoice_id"]}),
        422, "VALIDATION_ERROR")
    assert "invoice_id" in body["error"]["details"]
    assert row_counts() == before


@pytest.mark.parametrize("field, value", [("customer_id", 999_999), ("plan_id", 999_999)])
def test_a_subscription_for_a_record_that_does_not_exist_is_404(client, field, value):
    world = make_world()
    payload = {"customer_id": world["customer_id"], "plan_id": world["plan_id"], field: value}
    assert_error(client.post("/api/subscriptions/", json=payload, headers=bearer("support", "read,write")), 404,
                 "NOT_FOUND")

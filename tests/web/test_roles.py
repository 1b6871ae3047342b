"""Who may do what: every route, for every role and for anonymous visitors.

The expected permissions are written out here, independently of isp_admin.permissions.PERMISSIONS, so a view
guarded by the wrong permission fails this file. Each cell starts from fresh records, signs in as one role,
sends one request and checks the outcome: refused cells answer 403 (or send anonymous visitors to sign in)
and leave every table exactly as it was; allowed cells succeed and write the audit event they should.
"""
from __future__ import annotations

import re
from datetime import date

import pytest
from sqlalchemy import select

from isp_admin import create_app
from isp_admin.extensions import cache, db
from isp_admin.models import (
    CoaRequest,
    Nas,
    Payment,
    PaymentAttempt,
    PaymentProviderSetting,
    PlanChangeRequest,
    ProviderEvent,
    RadAcct,
)
from isp_admin.models.base import utcnow
from isp_admin.services.identity.tokens import create_token
from tests.conftest import app_config, delete_all_rows
from tests.factories import PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory
from tests.web.billing_world import billing_records
from tests.web.roles import (  # noqa: F401  (the vocabulary, shared with the extension modules)
    ADMINS,
    ANONYMOUS,
    EDITORS,
    EVERYONE,
    NEW_PASSWORD,
    OPERATORS,
    PLANNERS,
    PUBLIC,
    ROLES,
    Route,
    extra_records,
    extra_routes,
)

PLAN_FIELDS = {"name": "Fibre 500", "download_mbps": "500", "upload_mbps": "100", "monthly_price_cents": "79.00",
               "setup_fee_cents": "10.00", "tax_rate_bp": "16"}
CUSTOMER_FIELDS = {"name": "Wanjiku Mwangi", "email": "wanjiku@mail.example", "phone": "+254 711 000000",
                   "service_address": "1 Ngong Road, Nairobi"}

MATRIX = [
    # Public pages
    Route("GET", "/login", PUBLIC),
    Route("POST", "/login", PUBLIC, {"email": "<staff_email>", "password": PASSWORD}),
    Route("GET", "/forgot-password", PUBLIC),
    Route("POST", "/forgot-password", PUBLIC, {"email": "<staff_email>"}),
    Route("GET", "/reset-password/not-a-token", PUBLIC),
    Route("POST", "/reset-password/not-a-token", PUBLIC, {"password": NEW_PASSWORD, "confirm": NEW_PASSWORD}),
    Route("GET", "/health/", PUBLIC),
    Route("GET", "/health/live/", PUBLIC),
    Route("GET", "/health/ready/", PUBLIC),
    Route("GET", "/metrics", PUBLIC),  # to private networks (the test client is 127.0.0.1): tests/test_metrics.py
    # One's own account
    Route("GET", "/account/password", EVERYONE),
    Route("POST", "/account/password", EVERYONE,
          {"current_password": PASSWORD, "password": NEW_PASSWORD, "confirm": NEW_PASSWORD},
          audit="user.password_change"),
    Route("POST", "/logout", EVERYONE),
    # Reading
    Route("GET", "/", EVERYONE),
    Route("GET", "/customers/", EVERYONE),
    Route("GET", "/customers/<customer>", EVERYONE),
    Route("GET", "/subscriptions/<subscription>", EVERYONE),
    Route("GET", "/plans/", EVERYONE),
    # Customers
    Route("GET", "/customers/new", EDITORS),
    Route("POST", "/customers/new", EDITORS, CUSTOMER_FIELDS, audit="customer.create"),
    Route("GET", "/customers/<customer>/edit", EDITORS),
    Route("POST", "/customers/<customer>/edit", EDITORS, CUSTOMER_FIELDS, audit="customer.update"),
    Route("POST", "/customers/<customer>/close", EDITORS),  # it has a live subscription: refused with a flash
    # Subscriptions
    Route("GET", "/customers/<customer>/subscriptions/new", EDITORS),
    Route("POST", "/customers/<customer>/subscriptions/new", EDITORS,
          {"plan_id": "<second_plan>", "start_date": "2026-02-01", "billing_day": "1",
           "pppoe_username": "new-login"},
          audit="subscription.create"),
    Route("POST", "/subscriptions/<subscription>/change-plan", EDITORS, {"plan_id": "<second_plan>"},
          audit="subscription.change_plan"),
    Route("POST", "/subscriptions/<subscription>/suspend", EDITORS, {"reason": "manual"},
          audit="subscription.suspend"),
    Route("POST", "/subscriptions/<suspended>/resume", EDITORS, audit="subscription.resume"),
    Route("POST", "/subscriptions/<held>/approve-catch-up", PLANNERS, audit="subscription.approve_catch_up"),
    Route("POST", "/subscriptions/<subscription>/cancel", EDITORS, {"end_date": "2026-06-30"},
          audit="subscription.cancel"),
    Route("POST", "/subscriptions/<subscription>/network", EDITORS,
          {"pppoe_username": "renamed-login", "static_ip": "203.0.113.9", "cpe_mac": "00:11:22:33:44:55"},
          audit="subscription.update"),
    # Plans
    Route("GET", "/plans/new", PLANNERS),
    Route("POST", "/plans/new", PLANNERS, {"code": "FIBER-500", **PLAN_FIELDS}, audit="plan.create"),
    Route("GET", "/plans/<plan>/edit", PLANNERS),
    Route("POST", "/plans/<plan>/edit", PLANNERS, {"code": "FIBER-100", **PLAN_FIELDS}, audit="plan.update"),
    Route("POST", "/plans/<second_plan>/retire", PLANNERS, audit="plan.retire"),
    Route("POST", "/plans/<retired_plan>/reactivate", PLANNERS, audit="plan.reactivate"),
    Route("POST", "/plans/<spare_plan>/delete", PLANNERS, audit="plan.delete"),
    # Staff administration
    Route("GET", "/admin/users/", ADMINS),
    Route("GET", "/admin/users/new", ADMINS),
    Route("POST", "/admin/users/new", ADMINS, {"email": "newcomer@isp.example", "name": "New Comer", "role": "support"},
          audit="user.create"),
    Route("GET", "/admin/users/<staff>", ADMINS),
    Route("POST", "/admin/users/<staff>", ADMINS, {"role": "billing"}, audit="user.update"),
    Route("POST", "/admin/users/<staff>/deactivate", ADMINS, audit="user.update"),
    Route("POST", "/admin/users/<inactive_staff>/reactivate", ADMINS, audit="user.update"),
    Route("POST", "/admin/users/<staff>/unlock", ADMINS, audit="user.unlock"),
    # Reports (read-only, every role)
    Route("GET", "/reports/", EVERYONE),
    Route("GET", "/reports/aging", EVERYONE),
    Route("GET", "/reports/invoiced-collected", EVERYONE),
    Route("GET", "/reports/mrr", EVERYONE),
    Route("GET", "/reports/debtors", EVERYONE),
    # Invoices, payments, the billing run and the outbox (records from tests/web/billing_world.py)
    Route("GET", "/invoices/", EVERYONE),
    Route("GET", "/invoices/<invoice>", EVERYONE),
    Route("GET", "/invoices/<invoice>.pdf", EVERYONE),
    Route("GET", "/customers/<customer>/invoices/new", PLANNERS),
    Route("POST", "/customers/<customer>/invoices/new", PLANNERS,
          {"lines-0-description": "Installation", "lines-0-quantity": "1", "lines-0-unit_price_cents": "25.00",
           "lines-0-tax_rate_bp": "16"}, audit="invoice.create_draft"),
    Route("GET", "/invoices/<draft>/edit", PLANNERS),
    Route("POST", "/invoices/<draft>/edit", PLANNERS,
          {"lines-0-description": "Router", "lines-0-quantity": "2", "lines-0-unit_price_cents": "30.00"},
          audit="invoice.update_draft"),
    Route("POST", "/invoices/<draft>/delete", PLANNERS, audit="invoice.delete_draft"),
    Route("POST", "/invoices/<draft>/issue", PLANNERS, audit="invoice.issue"),
    Route("POST", "/invoices/<invoice>/send", PLANNERS, audit="invoice.send"),
    Route("POST", "/invoices/<invoice>/void", PLANNERS, {"reason": "Billed twice"}, audit="invoice.void"),
    Route("POST", "/customers/<customer>/generate-invoice", PLANNERS),  # nothing is due yet: a flash, no invoice
    Route("GET", "/customers/<customer>/statement", EVERYONE),
    Route("GET", "/payments/", EVERYONE),
    Route("GET", "/payments/new", PLANNERS),
    Route("POST", "/payments/new", PLANNERS,
          {"customer_id": "<customer>", "amount_cents": "20.00", "method": "cash", "received_on": "2026-01-15",
           "idempotency_key": "matrix-key"}, audit="payment.record"),
    Route("GET", "/payments/<payment>", EVERYONE),
    Route("POST", "/payments/<payment>/reverse", PLANNERS, {"reason": "Bounced"}, audit="payment.reverse"),
    # Online payments, the staff side (records below: an M-Pesa payment, a pending attempt, an unmatched event)
    Route("GET", "/payments/in-flight", EVERYONE),
    Route("GET", "/payments/providers", ADMINS),
    Route("POST", "/payments/providers", ADMINS, {"provider": "stripe", "enabled": "0"},
          audit="payment_provider.disable"),
    Route("POST", "/payments/events/<provider_event>/resolve", PLANNERS, {"resolution": "Recorded by hand"},
          audit="provider_event.resolve"),
    # M-Pesa cannot refund by API: allowed roles get the provider's refusal as a flash and a redirect.
    Route("POST", "/payments/<online_payment>/refund", PLANNERS, {"reason": "Paid twice"}),
    Route("POST", "/payments/<online_payment>/record-refund", PLANNERS,
          {"reference": "RFD-0001", "reason": "Refunded on the M-Pesa portal"}, audit="payment.reverse"),
    # The portal, the staff side: a sign-in link, and the plan changes customers asked for
    Route("POST", "/customers/<customer>/portal-invite", EDITORS, audit="portal_account.link_sent"),
    Route("GET", "/requests/plan-changes", EVERYONE),
    Route("POST", "/requests/plan-changes/<plan_change>/approve", EDITORS, audit="subscription.change_plan"),
    Route("POST", "/requests/plan-changes/<plan_change>/reject", EDITORS, {"note": "Not in your area yet"},
          audit="plan_change_request.rejected"),
    Route("GET", "/billing/run", EVERYONE),
    # A future date is refused before anything is queued, so the matrix never leaves jobs on the shared Redis.
    Route("POST", "/billing/run", PLANNERS, {"as_of": "2099-01-01"}),
    Route("GET", "/billing/jobs/", EVERYONE),
    Route("GET", "/billing/jobs/<job_run>", EVERYONE),
    Route("GET", "/billing/jobs/<job_run>/progress.json", EVERYONE),
    Route("POST", "/billing/jobs/<job_run>/resume", PLANNERS),
    Route("GET", "/billing/notifications/", EVERYONE),
    Route("POST", "/billing/notifications/<notification>/retry", PLANNERS, audit="notification.retry"),
    # Network (records below: a router and a failed CoA request)
    Route("GET", "/network/", EVERYONE),
    Route("POST", "/network/coa/<coa_request>/retry", OPERATORS, audit="coa.retry"),
    # -- network: sessions, credentials, subscription network panel --
    Route("GET", "/network/sessions", EVERYONE),
    Route("POST", "/network/sessions/<session>/disconnect", OPERATORS, audit="session.disconnect"),
    Route("POST", "/subscriptions/<subscription>/credentials", EDITORS, audit="subscription.credentials_set"),
    Route("POST", "/subscriptions/<subscription>/coa-resend", OPERATORS, audit="subscription.coa_resend"),
    # -- network: mismatches (billing <-> network) --
    Route("GET", "/network/mismatches", EVERYONE),
    Route("POST", "/network/mismatches/sessions/<session>/disconnect", OPERATORS, audit="session.disconnect"),
    Route("POST", "/network/mismatches/subscriptions/<subscription>/resend", OPERATORS,
          audit="subscription.coa_resend"),
    # Nothing refused it in this world: allowed roles get a flash and a redirect, no event (proven to write one in
    # tests/web/test_network_mismatches.py).
    Route("POST", "/network/mismatches/subscriptions/<subscription>/acknowledge", OPERATORS),
    # -- network: routers and policy --
    Route("GET", "/network/routers", EVERYONE),
    Route("GET", "/network/routers/new", ADMINS),
    Route("POST", "/network/routers/new", ADMINS,
          {"nasname": "192.0.2.2", "shortname": "bras-2", "type": "mikrotik", "secret": "matrix-router-secret",
           "coa_port": "3799"}, audit="nas.create"),
    Route("GET", "/network/routers/<router>/edit", ADMINS),
    Route("POST", "/network/routers/<router>/edit", ADMINS,
          {"nasname": "192.0.2.1", "shortname": "bras-1", "type": "cisco", "secret": "", "coa_port": "1700"},
          audit="nas.update"),
    Route("POST", "/network/routers/<router>/delete", ADMINS, audit="nas.delete"),  # its only request failed
    Route("GET", "/network/settings", EVERYONE),
    Route("POST", "/network/settings", ADMINS,
          {"non_payment": "walled_garden", "manual": "walled_garden", "vacation": "reject",
           "walled_garden_pool": "walled-garden", "walled_garden_rate": "256k/256k",
           "walled_garden_address_list": "suspended", "reject_message": "Service suspended: please contact us."},
          audit="network.policy"),
    Route("POST", "/network/settings/attributes", ADMINS,
          {"groupname": "walled-garden", "kind": "reply", "attribute": "Session-Timeout", "op": ":=",
           "value": "600"}, audit="network.group_attribute_add"),
    Route("POST", "/network/settings/attributes/remove", ADMINS,
          {"groupname": "walled-garden", "kind": "reply", "attribute": "Mikrotik-Address-List"},
          audit="network.group_attribute_remove"),
    Route("POST", "/plans/<plan>/attributes", PLANNERS,
          {"kind": "reply", "attribute": "Session-Timeout", "op": ":=", "value": "3600"},
          audit="plan.radius_attribute_add"),
    # The world's plan has no extra attribute: refused with a flash (the removal's audit: test_network_routers.py).
    Route("POST", "/plans/<plan>/attributes/remove", PLANNERS, {"kind": "reply", "attribute": "Session-Timeout"}),
    # API tokens: everyone manages their own; another's token only an admin may revoke
    Route("GET", "/account/tokens", EVERYONE),
    Route("POST", "/account/tokens", EVERYONE, {"name": "matrix script", "scopes": "read", "expires_days": "30"},
          audit="token.create"),
    Route("POST", "/account/tokens/<staff_token>/revoke", ADMINS, audit="token.revoke"),
    # The JSON API (bearer tokens) and its documentation
    Route("GET", "/api/openapi.json", PUBLIC),
    Route("GET", "/api/postman.json", PUBLIC),
    Route("GET", "/api/docs/", PUBLIC),
    Route("GET", "/api/plans/", EVERYONE, bearer=True),
    Route("GET", "/api/plans/<plan>/", EVERYONE, bearer=True),
    *extra_routes(),
]
PLACEHOLDER = re.compile(r"<(\w+)>")


def fill(template: str, values: dict) -> str:
    """Replace each <name> in a URL or form value with the fixture record's id (or value)."""
    return PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), template)


CELLS = [
    pytest.param(route, who, id=f"{who}-{route.method}-{route.url}")
    for route in MATRIX
    for who in (*ROLES, ANONYMOUS)
]


@pytest.fixture(scope="module")
def matrix_app(backends, tmp_path_factory):
    """One app for the whole matrix: building and truncating per cell would cost more than the cells."""
    app = create_app(app_config(backends["database_url"], backends["redis_url"], tmp_path_factory.mktemp("roles")))
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app(matrix_app):
    """The shared app in a fresh app context, every table emptied and the cache cleared."""
    with matrix_app.app_context():
        # DELETE of a few rows is far cheaper than conftest's TRUNCATE, which the matrix would run 200 times.
        delete_all_rows()
        cache.clear()
        yield matrix_app
        db.session.rollback()


@pytest.fixture
def world(app):
    """A customer with an active subscription, a manually suspended one, spare plans and other staff."""
    plan = PlanFactory.build(code="FIBER-100")
    second_plan, spare_plan = PlanFactory.build_batch(2)
    retired_plan = PlanFactory.build(active=False)
    customer = CustomerFactory.build()
    subscription = SubscriptionFactory.build(customer=customer, plan=plan)
    suspended = SubscriptionFactory.build(customer=customer, plan=plan, status="suspended",
                                          suspension_reason="manual")
    held = SubscriptionFactory.build(customer=customer, plan=plan, billing_hold_reason="40 periods due",
                                     billing_held_on=None)
    staff = UserFactory.build(role="support")
    inactive_staff = UserFactory.build(role="support", active=False)
    db.session.add_all([plan, second_plan, spare_plan, retired_plan, customer, subscription, suspended, held,
                        staff, inactive_staff])
    db.session.commit()  # one commit for the lot keeps each of the ~200 cells cheap
    staff_token, _ = create_token(staff.id, "staff script", "read", None)
    db.session.commit()
    billing = billing_records(customer.id)  # invoices, a payment, a job run, a failed email
    router = Nas(nasname="192.0.2.1", shortname="bras-1", secret="router-secret")
    db.session.add(router)
    db.session.flush()
    coa_request = CoaRequest(nas_id=router.id, nas_address="192.0.2.1", username=subscription.pppoe_username,
                             subscription_id=subscription.id, kind="disconnect", reason="rejected", status="failed",
                             attempts=8, last_error="no answer")
    db.session.add(coa_request)
    session = RadAcct(acctsessionid="81a00001", acctuniqueid="matrix-session-1", username=subscription.pppoe_username,
                      nasipaddress="192.0.2.1", framedipaddress="100.64.0.9", acctstarttime=utcnow(),
                      acctinputoctets=1000, acctoutputoctets=2000)
    db.session.add(session)
    db.session.commit()
    online = online_payment_records(customer.id, subscription.id, second_plan.id)
    world = {
        **online,
        "router": router.id, "coa_request": coa_request.id, "session": session.radacctid,
        **billing,
        "plan": plan.id, "second_plan": second_plan.id, "spare_plan": spare_plan.id,
        "retired_plan": retired_plan.id, "customer": customer.id, "subscription": subscription.id,
        "suspended": suspended.id, "held": held.id,
        "staff": staff.id, "staff_email": staff.email, "inactive_staff": inactive_staff.id,
        "staff_token": staff_token.id,
    }
    return {**world, **extra_records(world)}


def online_payment_records(customer_id: int, subscription_id: int, plan_id: int) -> dict:
    """Commit an M-Pesa payment with its attempt and event, a pending attempt, an unmatched notification, Stripe
    switched on, and a pending plan change request; return their ids."""
    payment = Payment(customer_id=customer_id, amount_cents=1500, currency="USD", method="mobile_money",
                      reference="QKL1234XYZ", provider="mpesa", provider_ref="ws_CO_matrix_1",
                      received_on=date(2026, 1, 14), status="completed", recorded_by="system")
    db.session.add(payment)
    db.session.flush()
    paid = PaymentAttempt(public_id="matrix-paid", customer_id=customer_id, provider="mpesa",
                          provider_ref="ws_CO_matrix_1", amount_cents=1500, currency="USD", status="succeeded",
                          phone="254711000000", payment_id=payment.id, created_by="portal")
    pending = PaymentAttempt(public_id="matrix-pending", customer_id=customer_id, provider="stripe",
                             provider_ref="cs_test_matrix", amount_cents=2000, currency="USD", status="pending",
                             created_by="portal")
    db.session.add_all([paid, pending])
    db.session.flush()
    recorded = ProviderEvent(provider="mpesa", event_id="callback:ws_CO_matrix_1:0", event_type="stk_callback",
                             attempt_id=paid.id, payment_id=payment.id, amount_cents=1500, currency="USD",
                             outcome="recorded")
    unmatched = ProviderEvent(provider="stripe", event_id="evt_matrix_unmatched",
                              event_type="checkout.session.completed", amount_cents=700, currency="USD",
                              outcome="unmatched")
    request = PlanChangeRequest(customer_id=customer_id, subscription_id=subscription_id, plan_id=plan_id,
                                note="Faster, please")
    db.session.add_all([recorded, unmatched, request, PaymentProviderSetting(provider="stripe", enabled=True)])
    db.session.commit()
    return {"online_payment": payment.id, "provider_event": unmatched.id, "plan_change": request.id}


def table_state() -> dict[str, list[dict]]:
    """Every row of every table, as committed in the database."""
    db.session.rollback()
    return {
        table.name: [dict(row) for row in db.session.execute(select(table).order_by(*table.primary_key)).mappings()]
        for table in db.metadata.sorted_tables
    }


def new_audit_events(before: dict) -> list[dict]:
    seen = {row["id"] for row in before["audit_events"]}
    return [row for row in table_state()["audit_events"] if row["id"] not in seen]


@pytest.mark.parametrize(("route", "who"), CELLS)
def test_role_matrix(app, client, login, world, route, who):
    actor = None if who == ANONYMOUS else login(who)
    url = fill(route.url, world)
    data = {name: fill(value, world) for name, value in route.data.items()}
    headers = {}
    if route.bearer and actor is not None:
        _, secret = create_token(actor.id, "matrix", "read", None)
        db.session.commit()
        headers["Authorization"] = f"Bearer {secret}"
    before = table_state()

    # Its own app context, as in production: otherwise the request would reuse the test's context and find the
    # user Flask-Login cached in `g` at sign-in, instead of loading them from the session cookie.
    with app.app_context():
        response = client.open(url, method=route.method, data=data if route.method == "POST" else None,
                               headers=headers)

    location = response.headers.get("Location", "")
    if route.bearer and actor is None:
        assert response.status_code == 401
        assert table_state() == before
    elif route.allowed is not PUBLIC and actor is None:
        assert response.status_code == 302
        assert "/login" in location
        assert table_state() == before
    elif route.allowed is not PUBLIC and who not in route.allowed:
        assert response.status_code == 403
        assert table_state() == before
    else:
        assert response.status_code in (200, 302), response.data[:500]
        if route.allowed is not PUBLIC and route.url != "/logout":
            assert "/login" not in location  # still signed in: the request really ran as this role
        if route.audit:
            events = new_audit_events(before)
            assert route.audit in [e["action"] for e in events]
            assert {e["actor_id"] for e in events} == {actor.id}  # attributed to the signed-in user


def _covered_endpoints(app) -> set[tuple[str, str]]:
    adapter = app.url_map.bind("localhost")
    covered = set()
    for route in MATRIX:
        endpoint, _ = adapter.match(PLACEHOLDER.sub("1", route.url), method=route.method)
        covered.add((endpoint, route.method))
    return covered


def test_every_view_declares_its_access(app):
    unguarded = [
        rule.endpoint for rule in app.url_map.iter_rules()
        # /health/detailed/ answers 401/403 as JSON (admins by session, or a health-scoped token): tests/test_health.py
        if rule.endpoint not in ("static", "bootstrap.static", "health.detailed")
        and not hasattr(app.view_functions[rule.endpoint], "access_permission")
    ]
    assert unguarded == []


def test_the_matrix_covers_every_route_and_method(app):
    covered = _covered_endpoints(app)
    missing = [
        (rule.endpoint, method, rule.rule)
        for rule in app.url_map.iter_rules()
        # /health/detailed/ answers 401/403 as JSON (admins by session, or a health-scoped token): tests/test_health.py
        if rule.endpoint not in ("static", "bootstrap.static", "health.detailed")
        # The API's resources have their own role x endpoint x method matrix (tests/api/test_api_roles.py).
        and not (rule.rule.startswith("/api/") and rule.endpoint.startswith("api_")
                 and not rule.endpoint.startswith("api_docs."))
        # The portal's customers have their own matrix, every route against every other customer
        # (tests/portal/), and providers' notifications are proven by signature and token (tests/webhooks/).
        and not rule.endpoint.startswith(("portal.", "webhooks."))
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"})
        if (rule.endpoint, method) not in covered
    ]
    assert missing == []

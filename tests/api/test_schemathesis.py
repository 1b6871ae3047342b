"""schemathesis over the whole OpenAPI document, against the app in process, with every default check.

Each operation is a test: the database is emptied and seeded (a plan, a customer on it, an issued and a draft
invoice, a payment, a billing run) so that ids in paths hit real rows, then schemathesis sends generated requests
with an admin token holding every scope and checks each answer against the spec. Background runs go to a queue of
this module's own on the real Redis, deleted afterwards. The number of cases, and the answers by operation, are
printed and written to SUMMARY_FILE.

Two settings say how this API differs from schemathesis' defaults, and why:
- a schema-valid request may be refused with 422 when a rule the schema cannot express forbids it: a business
  rule on the record's state (BUSINESS_RULE_VIOLATION), or a field rule that needs the database or the clock
  (SEMANTIC_FIELDS). `refused_only_by_semantic_rules` fails every other 422, so a field the spec describes
  wrongly is still caught;
- NUL characters are not generated (PostgreSQL text cannot hold them). The tests at the end send them, and
  mistyped JSON numbers and booleans, in every field of every body and every query parameter: 422, never a 500
  nor a silent coercion.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.result import Ok
from schemathesis.openapi.checks import RejectedPositiveData

from isp_admin import create_app
from isp_admin.api.postman import example_value
from isp_admin.extensions import db
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.billing import payments as payment_service
from isp_admin.services.identity import tokens as token_service
from isp_admin.services.platform import job_runs
from isp_admin.services.platform.clock import today
from tests.conftest import PG_URL, app_config, clean_context
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "50"))
# The same cases every run, so CI fails only on a change; SCHEMATHESIS_EXPLORE=1 draws new ones (to hunt bugs).
DETERMINISTIC = os.environ.get("SCHEMATHESIS_EXPLORE", "") != "1"
SUMMARY_FILE = Path(os.environ.get("SCHEMATHESIS_SUMMARY", Path(tempfile.gettempdir()) / "isp_admin_schemathesis.txt"))
# Fields whose valid values depend on more than their schema; a schema-valid value may be refused with 422.
SEMANTIC_FIELDS = {
    "before": "a cursor in both directions (after and before together)",
    "Idempotency-Key": "a key already used for another request",
    "as_of": "a day in the future", "received_on": "a day in the future",
    "start_date": "outside the service-date window, which moves with the clock (issue 12 item 1 bounds)",
    "end_date": "a day in the future, or before the subscription's start",
    "cursor": "an after/before value that no page handed out",
    "email": "a reserved or special-use domain (email-validator follows RFC 6761)",
    "invoice_id": "an invoice of another customer",
}
RUN = {"cases": 0, "statuses": {}}  # operation label -> {status: answers}


def _openapi_document() -> dict:
    # schemathesis makes one test per operation when this module is collected, before any fixture exists, so the
    # document comes from an app made here (it touches no database); requests go to `api_app`.
    with tempfile.TemporaryDirectory() as instance:
        app = create_app(app_config(PG_URL, None, Path(instance)))
        return app.test_client().get("/api/openapi.json").get_json()


class AppUnderTest:
    """The WSGI app schemathesis calls: `api_app`; the test pushes no context, so each request gets its own."""

    app = None

    def __call__(self, environ, start_response):
        return self.app(environ, start_response)


APP = AppUnderTest()
CONFIG = schemathesis.Config.from_dict({
    # A fixed seed as well as derandomized examples: schemathesis' own phases (coverage, examples) draw from it.
    **({"seed": 20260412} if DETERMINISTIC else {}),
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": DETERMINISTIC, "allow-x00": False},
    "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422",
                                                                  "429"]}},
})
DOCUMENT = _openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)
schema.app = APP
# The seeded admin token's secret. schemathesis builds some cases (its coverage phase) when the module is
# collected, auth included, so the secret is known now and the seed stores a token for it.
SECRET = f"ispa_schemathesis_{uuid.uuid4().hex}"


@schema.auth(refresh_interval=None, retry_on=[])
class AdminToken:
    """The seeded admin's token, through schemathesis' auth, so that its cases without auth really go without."""

    def get(self, case, ctx):
        """Return the Authorization value of the seeded admin token."""
        return f"Bearer {SECRET}"

    def set(self, case, data, ctx):
        """Send it as the Authorization header."""
        case.headers = {**(case.headers or {}), "Authorization": data}


def refused_only_by_semantic_rules(ctx, response, case):
    """Fail a schema-valid request refused with VALIDATION_ERROR on a field whose schema should have allowed it."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    error = response.json()["error"]
    unexplained = sorted(set(error["details"]) - set(SEMANTIC_FIELDS))
    if error["code"] == "VALIDATION_ERROR" and unexplained:
        raise RejectedPositiveData(
            operation=case.operation.label, status_code=422, allowed_statuses=["2xx", "422 on semantic fields"],
            message=f"Schema-valid values refused: {error['details']} (fields {unexplained} have rules their "
                    "schema does not state)")
    return None


def errors_are_envelopes(ctx, response, case):
    """Fail any error answer (positive or negative case, 5xx included) that is not the JSON error envelope."""
    if response.status_code < 400:
        return None
    body = response.json() if "json" in response.headers.get("content-type", [""])[0] else None
    error = body.get("error") if isinstance(body, dict) else None
    if not (isinstance(error, dict) and body.get("success") is False and isinstance(error.get("code"), str)):
        raise AssertionError(f"{case.operation.label} answered {response.status_code} without the error envelope: "
                             f"{response.text[:200]!r}")
    return None


@pytest.fixture(scope="module")
def api_app(backends, tmp_path_factory, request):
    """The app under test, on the test database, with background runs on a queue of this module's own."""
    queue = f"test-schemathesis-{uuid.uuid4().hex[:8]}"
    app = create_app(app_config(backends["database_url"], backends["redis_url"], tmp_path_factory.mktemp("st"),
                                RQ_QUEUE=queue, MAIL_OUTBOX_DIR=str(tmp_path_factory.mktemp("outbox"))))
    APP.app = app
    yield app
    APP.app = None
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    if backends["redis_url"]:
        connection = redis.Redis.from_url(backends["redis_url"])
        keys = list(connection.scan_iter(match=f"*{queue}*", count=1000))
        if keys:
            connection.delete(*keys)
    if not RUN["cases"]:
        return  # only the field-by-field tests ran
    summary = f"schemathesis: {RUN['cases']} cases, {len(RUN['statuses'])} operations"
    by_operation = [f"  {label}: " + ", ".join(f"{status} x{n}" for status, n in sorted(statuses.items()))
                    for label, statuses in sorted(RUN["statuses"].items())]
    SUMMARY_FILE.write_text("\n".join([summary, *by_operation]) + "\n")
    capture = request.config.pluginmanager.get_plugin("capturemanager")  # shown even when output is captured
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{summary} (answers by operation in {SUMMARY_FILE})")


# One param, so that each operation's item has a callspec: pytest 9.2 builds an item's id from it, and
# schemathesis' items would otherwise share one id, which pytest-xdist cannot schedule apart.
@pytest.fixture(params=["one-of-each"])
def seeded(api_app, backends):
    """Seed one of each record on an empty database, and an admin token with every scope."""
    if not backends["redis_url"]:
        pytest.skip("needs Redis: bulk-generate answers 503 without it")
    with clean_context(api_app):
        plan = PlanFactory()
        customer = CustomerFactory()
        SubscriptionFactory(customer=customer, plan=plan)
        invoice = invoice_service.create_draft(customer.id, [{"description": "Router", "unit_price_cents": 5000}],
                                               today() - timedelta(days=40))
        invoice_service.issue(invoice.id, today() - timedelta(days=40))
        invoice_service.create_draft(customer.id, [{"description": "Cable", "unit_price_cents": 700}], today())
        payment_service.record_payment(customer.id, 1000, "cash", today(), today(), invoice_id=invoice.id)
        job_runs.start_run("generate_monthly_invoices", today(), dry_run=False, triggered_by="schemathesis seed")
        token, _ = token_service.create_token(UserFactory(role="admin").id, "schemathesis", "read,write,billing",
                                              None)
        token.token_hash, token.prefix = token_service.hash_secret(SECRET), SECRET[:12]
        db.session.commit()


@schema.parametrize()
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                HealthCheck.filter_too_much])
def test_every_operation_conforms_to_the_spec(case, seeded):
    RUN["cases"] += 1
    response = case.call_and_validate(additional_checks=[refused_only_by_semantic_rules, errors_are_envelopes])
    statuses = RUN["statuses"].setdefault(case.operation.label, {})
    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1


def test_schemathesis_loads_every_operation_of_the_document():
    results = list(schema.get_all_operations())
    assert all(isinstance(result, Ok) for result in results), [r for r in results if not isinstance(r, Ok)]
    documented = {f"{method.upper()} {path}" for path, item in DOCUMENT["paths"].items() for method in item
                  if method != "parameters"}
    assert {result.ok().label for result in results} == documented and len(documented) >= 37


# --- what schemathesis is told not to send, or cannot tell apart, checked field by field ----------------------

def _resolve(node: dict) -> dict:
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = DOCUMENT["components"][section][name]
    return node


def _typed_leaves(body_schema: dict, value, path: tuple = ()):
    """Yield (path, JSON schema type) of every scalar in an example body."""
    body_schema = _resolve(body_schema)
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _typed_leaves(body_schema.get("properties", {}).get(key, {}), item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _typed_leaves(body_schema.get("items", {}), item, (*path, str(index)))
    else:
        yield path, body_schema.get("type")


def _with(value, path: tuple, leaf):
    copy = json.loads(json.dumps(value))
    target = copy
    for key in path[:-1]:
        target = target[int(key) if isinstance(target, list) else key]
    target[int(path[-1]) if isinstance(target, list) else path[-1]] = leaf
    return copy


def _body_probes(kinds: dict):
    """Yield (method, url, body, field) for every body field of a kind in `kinds`, its value replaced."""
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            content = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if not content:
                continue
            url = re.sub(r"\{\w+\}", "1", path)
            example = example_value(DOCUMENT, content["schema"])
            for field, kind in _typed_leaves(content["schema"], example):
                for leaf in kinds.get(kind, ()):
                    yield method, url, _with(example, field, leaf), ".".join(field)


def _assert_field_error(response, field: str, probe) -> None:
    assert response.status_code == 422, (probe, response.status_code, response.get_data()[:300])
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and field in error["details"], (probe, error)


def test_text_the_database_cannot_store_is_a_field_error(api_app, seeded):
    client, headers, probes = api_app.test_client(), {"Authorization": f"Bearer {SECRET}"}, 0
    for method, url, body, field in _body_probes({"string": ("a\x00b", "a\ud800b")}):
        response = client.open(url, method=method.upper(), data=json.dumps(body), headers=headers,
                               content_type="application/json")
        _assert_field_error(response, field, (method, url, body))
        probes += 1
    for path, item in DOCUMENT["paths"].items():
        for parameter in item.get("get", {}).get("parameters", []):
            if "name" in parameter and parameter["in"] == "query":
                url = re.sub(r"\{\w+\}", "1", path)
                response = client.get(url, query_string={parameter["name"]: "2026\x00"}, headers=headers)
                _assert_field_error(response, parameter["name"], (url, parameter["name"]))
                probes += 1
    assert probes > 100


def test_json_numbers_and_booleans_are_taken_as_typed(api_app, seeded):
    client, headers, probes = api_app.test_client(), {"Authorization": f"Bearer {SECRET}"}, 0
    # 10.99 was stored as 10 (money!), "7" as 7 and "yes" as true: marshmallow coerces them.
    for method, url, body, field in _body_probes({"integer": (10.99, 1.0, "7", True), "boolean": ("true", 1)}):
        response = client.open(url, method=method.upper(), json=body, headers=headers)
        _assert_field_error(response, field, (method, url, body))
        probes += 1
    assert probes > 50

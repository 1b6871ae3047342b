"""The OpenAPI document and the Postman collection: valid, complete, and true to what the API answers.

The document is generated from the code (flask-smorest, completed by isp_admin.api.spec); these tests hold it to
the app: every route is an operation, every operation lists the statuses and headers the app's hooks add, every
stable error code has an example, and the examples are answers the API really gives.
"""
from __future__ import annotations

import json
import re
from http import HTTPStatus

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi

from isp_admin.errors import HTTP_CODES, AppError
from isp_admin.jobs.queue import QueueUnavailable
from isp_admin.services.identity.tokens import TokenRejected
from tests.api.helpers import bearer
from tests.conftest import clean_context
from tests.factories import CustomerFactory, SubscriptionFactory

DOC_ENDPOINTS = {"api_docs.openapi_json", "api_docs.swagger_ui", "api_docs.postman_json"}
METHODS = ("get", "post", "put", "patch", "delete")
RATE_LIMIT_HEADERS = {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"}
ID_MAX = 2**31 - 1


@pytest.fixture
def spec(client) -> dict:
    """The document as /api/openapi.json serves it."""
    response = client.get("/api/openapi.json")
    assert response.status_code == 200 and response.content_type == "application/json"
    return response.get_json()


def operations(spec: dict):
    """Yield (path, method, operation) for every operation of the document."""
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def resolve(spec: dict, node: dict) -> dict:
    """Follow a $ref into the document's components."""
    while "$ref" in node:
        section, name = node["$ref"].split("/")[-2:]
        node = spec["components"][section][name]
    return node


def view_of(app, operation: dict):
    """The view function behind an operation (its operationId is the endpoint without the api_ prefix)."""
    return app.view_functions[f"api_{operation['operationId']}"]


def schema_validator(spec: dict, schema: dict) -> jsonschema.Draft7Validator:
    """A validator for one schema of the document, its $refs resolved against the document's components."""
    return jsonschema.Draft7Validator({**schema, "components": spec["components"]},
                                      format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def error_examples(spec: dict):
    """Yield (status, name, value) for every example of every error response."""
    for component, response in spec["components"]["responses"].items():
        for name, example in response["content"]["application/json"].get("examples", {}).items():
            yield HTTPStatus[component].value, name, example["value"]


def stable_codes() -> dict[str, set[int]]:
    """Every code the app answers with, and the statuses it comes with (isp_admin.errors and AppError classes)."""
    codes: dict[str, set[int]] = {}
    for status, code in HTTP_CODES.items():
        codes.setdefault(code, set()).add(status)
    pending = list(AppError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        codes.setdefault(cls.code, set()).add(cls.status)
    return codes


# --- the document ---------------------------------------------------------------------------------------------

def test_the_document_is_valid_openapi_3(spec):
    validate_openapi(spec)
    assert spec["openapi"] == "3.0.3"


def test_every_api_route_and_method_is_an_operation_and_every_operation_a_route(app, spec):
    routes = {(re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules()
              if rule.rule.startswith("/api/") and rule.endpoint not in DOC_ENDPOINTS
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, method, _ in operations(spec)}
    assert len(routes) >= 37
    assert routes == documented


def test_every_operation_lists_the_statuses_the_app_may_answer(spec):
    for path, method, operation in operations(spec):
        statuses = set(operation["responses"])
        expected = {"400", "401", "403", "429", "500"}
        expected |= {"415"} if method in ("post", "put", "patch") else set()
        expected |= {"404"} if "{" in path else set()
        expected |= {"304"} if method == "get" else set()
        assert expected <= statuses, (method, path, expected - statuses)
        assert "default" not in statuses, "a catch-all would let any status pass as documented"
        assert any(status[0] == "2" for status in statuses), (method, path)
        for status in statuses - {"304"}:
            response = operation["responses"][status]
            if status[0] in "45":
                assert response == {"$ref": f"#/components/responses/{HTTPStatus(int(status)).name}"}
            else:
                assert resolve(spec, response["content"]["application/json"]["schema"])["properties"]["success"]


def test_bulk_generate_documents_the_503_it_answers_without_redis(spec):
    assert "503" in spec["paths"]["/api/billing/bulk-generate/"]["post"]["responses"]


def test_path_ids_are_documented_in_the_range_the_routes_take(spec):
    for path, item in spec["paths"].items():
        for parameter in item.get("parameters", []):
            assert parameter["in"] == "path" and parameter["name"] in path
            assert parameter["schema"] == {"type": "integer", "minimum": 1, "maximum": ID_MAX}, path


def test_request_headers_are_documented_where_the_app_reads_them(app, spec):
    idempotent = set()
    for path, method, operation in operations(spec):
        parameters = [resolve(spec, p) for p in operation.get("parameters", [])]
        names = {p["name"] for p in parameters if p["in"] == "header"}
        assert "Accept-Version" in names
        assert ("If-None-Match" in names) == (method == "get"), (method, path)
        if getattr(view_of(app, operation), "idempotent", False):
            idempotent.add((method, path))
        assert ("Idempotency-Key" in names) == ((method, path) in idempotent), (method, path)
    assert idempotent == {("post", "/api/billing/payments/"), ("post", "/api/billing/invoices/"),
                          ("post", "/api/billing/invoices/{invoice_id}/pay/"),
                          ("post", "/api/billing/generate-invoice/"), ("post", "/api/billing/bulk-generate/")}


def test_response_headers_are_documented_where_the_app_sends_them(app, spec):
    for path, method, operation in operations(spec):
        idempotent = getattr(view_of(app, operation), "idempotent", False)
        for status, response in operation["responses"].items():
            headers = set(resolve(spec, response).get("headers", {}))
            assert "X-API-Version" in headers, (method, path, status)
            if status[0] == "2":
                assert headers >= RATE_LIMIT_HEADERS
                assert ("ETag" in headers) == (method == "get"), (method, path, status)
                assert ("Location" in headers) == (status in ("201", "202")), (method, path, status)
                assert ("Idempotent-Replayed" in headers) == idempotent, (method, path, status)
    components = spec["components"]["responses"]
    assert "WWW-Authenticate" in components["UNAUTHORIZED"]["headers"]
    assert "Allow" in components["METHOD_NOT_ALLOWED"]["headers"]
    assert {"Retry-After", *RATE_LIMIT_HEADERS} <= set(components["TOO_MANY_REQUESTS"]["headers"])
    assert "Retry-After" in components["CONFLICT"]["headers"]
    assert spec["components"]["headers"]["X-API-Version"]["required"] is True


def test_every_stable_error_code_has_an_example_in_the_envelope(spec):
    validator = schema_validator(spec, {"$ref": "#/components/schemas/ErrorEnvelope"})
    codes = stable_codes()
    seen = set()
    for status, name, value in error_examples(spec):
        validator.validate(value)
        code = value["error"]["code"]
        assert status in codes[code], f"{code} is never answered with {status} (example {name})"
        assert re.fullmatch(rf"{code}(_\d+)?", name), name
        seen.add(code)
    assert {"VALIDATION_ERROR", "AUTHENTICATION_REQUIRED", "PERMISSION_DENIED", "NOT_FOUND", "METHOD_NOT_ALLOWED",
            "CONFLICT", "UNSUPPORTED_MEDIA_TYPE", "RATE_LIMITED", "BUSINESS_RULE_VIOLATION",
            "EXTERNAL_SERVICE_ERROR", "INTERNAL_ERROR"} <= seen
    assert set(codes) - {AppError.code} <= seen  # every code the app can answer with, not only today's list
    assert QueueUnavailable.code in seen and TokenRejected.code in seen


def test_the_overview_covers_auth_envelope_pagination_idempotency_limits_and_the_codes(spec):
    description = spec["info"]["description"]
    for topic in ("**Authentication.**", "**Envelope.**", "**Pagination.**", "**Idempotency.**", "**Rate limits.**",
                  "**Error codes.**", "Retry-After", "X-API-Version", "If-None-Match", "Idempotent-Replayed"):
        assert topic in description, topic
    table = {row.split("|")[1].strip(" `") for row in description.splitlines() if row.startswith("| `")}
    assert table == set(stable_codes()) - {AppError.code}


# --- the examples are real answers ----------------------------------------------------------------------------

@pytest.fixture
def world(app):
    """Tokens and records the error scenarios need."""
    subscription = SubscriptionFactory(pppoe_username="dup1")
    return {"admin": bearer("admin", "read,write,billing"), "readonly": bearer("readonly", "read"),
            "subscription": subscription, "other_customer": CustomerFactory()}


SCENARIOS = {
    "malformed JSON": lambda c, w: c.post("/api/customers/", data="{bad",
                                          headers={**w["admin"], "Content-Type": "application/json"}),
    "unsupported version": lambda c, w: c.get("/api/plans/", headers={**w["admin"], "Accept-Version": "2"}),
    "bad Idempotency-Key": lambda c, w: c.post("/api/billing/payments/", json={},
                                               headers={**w["admin"], "Idempotency-Key": " "}),
    "no token": lambda c, w: c.get("/api/plans/"),
    "unknown token": lambda c, w: c.get("/api/plans/", headers={"Authorization": "Bearer ispa_nope"}),
    "missing scope": lambda c, w: c.post("/api/customers/", json={"name": "X"}, headers=w["readonly"]),
    "no such record": lambda c, w: c.get("/api/customers/42/", headers=w["admin"]),
    "no such route": lambda c, w: c.get("/api/nope/", headers=w["admin"]),
    "method not allowed": lambda c, w: c.put("/api/plans/", json={}, headers=w["admin"]),
    "duplicate PPPoE login": lambda c, w: c.post("/api/subscriptions/", headers=w["admin"], json={
        "customer_id": w["other_customer"].id, "plan_id": w["subscription"].plan_id, "pppoe_username": "dup1"}),
    "text body": lambda c, w: c.post("/api/customers/", data="x", headers={**w["admin"], "Content-Type": "text/plain"}),
    "invalid fields": lambda c, w: c.post("/api/customers/", json={"name": "X", "email": "bad", "colour": 1},
                                          headers=w["admin"]),
    "business rule": lambda c, w: c.post(f"/api/subscriptions/{w['subscription'].id}/resume/", headers=w["admin"]),
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_error_examples_are_answers_the_api_gives(client, spec, world, scenario):
    response = SCENARIOS[scenario](client, world)
    assert_documented_answer(spec, response)


def test_the_503_example_is_what_bulk_generate_answers_without_redis(make_app):
    with clean_context(make_app(REDIS_URL=None)) as app:
        headers = bearer("billing", "read,billing")
        response = app.test_client().post("/api/billing/bulk-generate/", json={}, headers=headers)
        assert_documented_answer(app.test_client().get("/api/openapi.json").get_json(), response)


def test_the_429_answer_and_the_rate_limit_headers_are_documented(make_app):
    with clean_context(make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_AUTHENTICATED="1/minute")) as app:
        client, headers = app.test_client(), bearer("readonly", "read")
        spec = client.get("/api/openapi.json").get_json()
        first, second = client.get("/api/plans/", headers=headers), client.get("/api/plans/", headers=headers)
        assert first.status_code == 200 and second.status_code == 429
        assert set(first.headers.keys()) >= RATE_LIMIT_HEADERS
        assert second.get_json()["error"]["code"] == "RATE_LIMITED" and "Retry-After" in second.headers
        documented = set(resolve(spec, spec["paths"]["/api/plans/"]["get"]["responses"]["429"])["headers"])
        assert {"Retry-After", *RATE_LIMIT_HEADERS} <= documented


def assert_documented_answer(spec: dict, response) -> None:
    """Assert the error answer is one of its status's examples (but the time) and has the documented headers."""
    component = spec["components"]["responses"][HTTPStatus(response.status_code).name]
    body = {**response.get_json(), "timestamp": None}
    examples = [{**example["value"], "timestamp": None}
                for example in component["content"]["application/json"]["examples"].values()]
    assert body in examples, body
    required = [name for name, header in component["headers"].items() if resolve(spec, header)["required"]]
    assert required and all(name in response.headers for name in required), required


def test_ids_beyond_the_documented_range_miss_the_route_for_every_method(client, spec):
    headers = bearer("admin", "read,write,billing")
    for path, method, _ in operations(spec):
        if "{" not in path:
            continue
        for bad_id in (0, ID_MAX + 1, 10**20):
            url = re.sub(r"\{\w+\}", str(bad_id), path)
            response = client.open(url, method=method.upper(), json={}, headers=headers)
            assert response.status_code == 404, (method, url, response.status_code)
            assert response.get_json()["error"]["code"] == "NOT_FOUND"
        response = client.open(re.sub(r"\{\w+\}", str(ID_MAX), path), method=method.upper(), json={},
                               headers=headers)
        assert response.status_code in (404, 422), (method, path, response.status_code)  # the view's answer


# --- Swagger UI -------------------------------------------------------------------------------------------------

def test_the_docs_page_reads_the_local_spec_with_local_assets_only(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.text
    assert 'data-spec-url="/api/openapi.json"' in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(asset.startswith("/static/") for asset in assets)
    assert not re.search(r"https?://", html)
    for asset in assets:
        with client.get(asset) as served:
            assert served.status_code == 200, asset


# --- Postman ----------------------------------------------------------------------------------------------------

@pytest.fixture
def collection(client) -> dict:
    """The collection as /api/postman.json serves it, without a token (it is public, like the spec)."""
    response = client.get("/api/postman.json")
    assert response.status_code == 200 and response.content_type == "application/json"
    return response.get_json()


def test_the_postman_collection_has_the_v2_1_shape(collection, spec):
    assert collection["info"]["schema"] == "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
    assert collection["info"]["name"] == spec["info"]["title"]
    assert collection["auth"] == {"type": "bearer",
                                  "bearer": [{"key": "token", "value": "{{token}}", "type": "string"}]}
    variables = {v["key"]: v["value"] for v in collection["variable"]}
    assert variables == {"baseUrl": "http://localhost", "token": ""}
    tags = {operation["tags"][0] for _, _, operation in operations(spec)}
    assert {folder["name"] for folder in collection["item"]} == tags
    for folder in collection["item"]:
        assert folder["item"] and all({"name", "request"} <= set(item) for item in folder["item"])
        for item in folder["item"]:
            request, url = item["request"], item["request"]["url"]
            assert request["method"] in ("GET", "POST", "PUT", "PATCH", "DELETE")
            assert url["host"] == ["{{baseUrl}}"] and url["raw"] == "{{baseUrl}}/" + "/".join(url["path"])
            assert {"key": "Accept", "value": "application/json"} in request["header"]


def test_the_postman_collection_has_one_request_per_operation(collection, spec):
    requests = [item["request"] for folder in collection["item"] for item in folder["item"]]
    sent = sorted((r["method"].lower(), "/" + "/".join(re.sub(r"^:(\w+)$", r"{\1}", s) for s in r["url"]["path"]))
                  for r in requests)
    assert sent == sorted((method, path) for path, method, _ in operations(spec))
    by_operation = {(r["method"].lower(), "/" + "/".join(re.sub(r"^:(\w+)$", r"{\1}", s)
                                                         for s in r["url"]["path"])): r for r in requests}
    for path, method, operation in operations(spec):
        request = by_operation[(method, path)]
        parameters = [resolve(spec, p) for p in operation.get("parameters", [])]
        assert {v["key"] for v in request["url"]["variable"]} == set(re.findall(r"\{(\w+)\}", path))
        assert {q["key"] for q in request["url"]["query"]} == {p["name"] for p in parameters if p["in"] == "query"}
        headers = {h["key"]: h["value"] for h in request["header"]}
        assert ("Idempotency-Key" in headers) == any(p["name"] == "Idempotency-Key" for p in parameters)
        body = operation.get("requestBody")
        assert ("body" in request) == bool(body) == (headers.get("Content-Type") == "application/json")
        if body:
            example = json.loads(request["body"]["raw"])
            schema_validator(spec, body["content"]["application/json"]["schema"]).validate(example)


def test_the_postman_example_bodies_are_accepted_by_the_api(client, collection):
    headers = bearer("admin", "read,write,billing")
    requests = {(item["request"]["method"], item["request"]["url"]["raw"]): item["request"]
                for folder in collection["item"] for item in folder["item"]}
    for url, created in (("{{baseUrl}}/api/customers/", 201), ("{{baseUrl}}/api/plans/", 201)):
        body = json.loads(requests[("POST", url)]["body"]["raw"])
        response = client.post(url.replace("{{baseUrl}}", ""), json=body, headers=headers)
        assert response.status_code == created, response.get_json()

"""The OpenAPI document made complete: error responses with examples, documented headers, the overview.

flask-smorest documents what the view decorators say (arguments, success schema, `documented` error codes).
What the app's hooks add around every view — versioning, 415, conditional GETs, Idempotency-Key, rate limits,
route misses on ids out of range — is documented here, by an apispec plugin that sees each view as it registers.
"""
from __future__ import annotations

from http import HTTPStatus

from apispec import BasePlugin
from flask import Flask

from isp_admin.api.versioning import API_VERSION

TIMESTAMP = "2026-01-31T09:30:00.000000Z"
BODY_METHODS = ("post", "put", "patch")
REASONS = {
    400: "The request is malformed: a body that is not JSON, an unsupported Accept-Version, a token in the URL, "
         "or a bad Idempotency-Key.",
    401: "No token, or a token that is unknown, revoked or expired.",
    403: "The token lacks the scope, or its owner's role lacks the permission.",
    404: "No such record (or an id out of range), or no such route.",
    405: "The path exists but not with this method; Allow lists the methods it takes.",
    409: "The write collides with existing data, or the same Idempotency-Key is still being processed.",
    415: "A request body that is not application/json.",
    422: "A field is invalid (details name each field), or a business rule forbids the action.",
    429: "Too many requests for this token (or address); wait Retry-After seconds.",
    500: "An unexpected error; the server logged it with the request id.",
    503: "A service the request needs (Redis for background jobs) is unavailable; nothing was done.",
}
# status -> [(code, message, details)]: answers the API really gives (tests/api/test_openapi_docs.py replays most),
# and every stable code of isp_admin.errors at least once.
EXAMPLES = {
    400: [("VALIDATION_ERROR", "The request body is not valid JSON: Expecting property name enclosed in double "
                               "quotes: line 1 column 2 (char 1).", {"body": "Not valid JSON."}),
          ("VALIDATION_ERROR", f"API version '2' is not supported; this server speaks version {API_VERSION}.",
           {"Accept-Version": f"Supported: {API_VERSION}."}),
          ("VALIDATION_ERROR", "An Idempotency-Key is 1 to 255 printable ASCII characters.",
           {"Idempotency-Key": "An Idempotency-Key is 1 to 255 printable ASCII characters."})],
    401: [("AUTHENTICATION_REQUIRED", "Authentication required: send 'Authorization: Bearer <token>'.", {}),
          ("AUTHENTICATION_REQUIRED", "The API token is not valid.", {})],
    403: [("PERMISSION_DENIED", "This token lacks the write scope.", {})],
    404: [("NOT_FOUND", "No such customer.", {}),
          ("NOT_FOUND", "The requested URL was not found on the server. If you entered the URL manually please check "
                        "your spelling and try again.", {})],
    405: [("METHOD_NOT_ALLOWED", "The method is not allowed for the requested URL.", {})],
    409: [("CONFLICT", "A network identifier is already in use.",
           {"pppoe_username": "Already used by another live subscription."}),
          ("CONFLICT", "A request with this Idempotency-Key is still in progress; retry in a moment.",
           {"Idempotency-Key": "In progress."})],
    415: [("UNSUPPORTED_MEDIA_TYPE", "Send the request body as application/json (got text/plain).",
           {"Content-Type": "Must be application/json."})],
    422: [("VALIDATION_ERROR", "Please correct the highlighted fields.",
           {"colour": "Unknown field.", "email": "Not a valid email address."}),
          ("BUSINESS_RULE_VIOLATION", "Only a suspended subscription can be resumed.", {})],
    429: [("RATE_LIMITED", "Too many requests. Please wait a moment and try again.", {})],
    500: [("INTERNAL_ERROR", "The server could not complete the request.", {})],
    503: [("EXTERNAL_SERVICE_ERROR", "Background jobs need Redis: set REDIS_URL.", {}),
          ("EXTERNAL_SERVICE_ERROR", "Redis at redis://redis:6379/0 does not answer (ConnectionError); no job "
                                     "was queued.", {}),
          ("SERVICE_UNAVAILABLE", "The server could not complete the request.", {})],
}
ERROR_HEADERS = {401: ["WWW-Authenticate"], 405: ["Allow"], 409: ["Retry-After"], 429: ["Retry-After"]}
RATE_LIMIT_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
HEADERS = {
    "X-API-Version": ("The API version that answered.", {"type": "string", "enum": [API_VERSION]}, True),
    "X-RateLimit-Limit": ("Requests allowed in the current window (when rate limiting is on).",
                          {"type": "integer"}, False),
    "X-RateLimit-Remaining": ("Requests left in the current window.", {"type": "integer"}, False),
    "X-RateLimit-Reset": ("When the window resets, in seconds since the epoch.", {"type": "integer"}, False),
    "Retry-After": ("Seconds to wait before retrying.", {"type": "integer"}, False),
    "ETag": ("The representation's tag: send it back in If-None-Match to get 304 when it has not changed.",
             {"type": "string"}, True),
    "Location": ("The path of the record made (or of the run's progress).", {"type": "string"}, True),
    "Idempotent-Replayed": ("Present (true) when this is the stored answer to an earlier request with the same "
                            "Idempotency-Key.", {"type": "string", "enum": ["true"]}, False),
    "WWW-Authenticate": ("The bearer challenge.", {"type": "string"}, True),
    "Allow": ("The methods this path takes.", {"type": "string"}, True),
}
PARAMETERS = {
    "IdempotencyKey": {
        "in": "header", "name": "Idempotency-Key", "required": False,
        "description": "Run this POST at most once per key and token (kept 24 hours): a retry with the same key "
                       "and body gets the stored answer (Idempotent-Replayed: true); the same key with another body "
                       "is a 422; a retry while the first still runs is a 409 with Retry-After.",
        # Printable ASCII without surrounding spaces, 1 to 255 characters (spaces would be stripped).
        "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]([ -~]{0,253}[!-~])?$"},
    },
    "AcceptVersion": {
        "in": "header", "name": "Accept-Version", "required": False,
        "description": "The API version the client expects; another one is refused with 400.",
        "schema": {"type": "string", "enum": [API_VERSION]},
    },
    "IfNoneMatch": {
        "in": "header", "name": "If-None-Match", "required": False,
        "description": "The ETag of a copy the client holds: 304 Not Modified (no body) while it is current.",
        "schema": {"type": "string"},
    },
}
ERROR_CODES = [
    ("VALIDATION_ERROR", "400, 422", "A field (details: field → message) or the request itself is invalid."),
    ("AUTHENTICATION_REQUIRED", "401", "No token, or one that is unknown, revoked or expired."),
    ("PERMISSION_DENIED", "403", "The token's scopes or its owner's role do not allow this."),
    ("NOT_FOUND", "404", "No such record or route."),
    ("METHOD_NOT_ALLOWED", "405", "The path does not take this method (see Allow)."),
    ("CONFLICT", "409", "A duplicate, a concurrent change, or an Idempotency-Key still in progress."),
    ("UNSUPPORTED_MEDIA_TYPE", "415", "The body is not application/json."),
    ("BUSINESS_RULE_VIOLATION", "422", "Well-formed, but a billing or account rule forbids it."),
    ("RATE_LIMITED", "429", "Too many requests; wait Retry-After seconds."),
    ("INTERNAL_ERROR", "500", "Unexpected; logged with the request id."),
    ("EXTERNAL_SERVICE_ERROR", "503", "A service it needs (Redis) is down; nothing was done."),
    ("SERVICE_UNAVAILABLE", "503", "The server cannot answer now; retry later."),
]
DESCRIPTION = f"""\
The ISP Admin JSON API: customers, plans, subscriptions and billing.

**Authentication.** Every operation takes a bearer token (`Authorization: Bearer <token>`), made on the
*API tokens* page (/account/tokens) or with `flask tokens create`. A token has scopes — `read`, `write`
(customers, subscriptions, plans), `billing` (invoices, payments, runs) — and acts with its owner's role.
A token in the URL is refused.

**Envelope.** Success: `{{"success": true, "message", "data", "timestamp"}}` (lists add `pagination`).
Errors: `{{"success": false, "message", "error": {{"code", "details"}}, "timestamp"}}`, where `details` maps
field names to messages. Money is integer minor units (`*_cents`); tax rates are basis points.

**Pagination.** Lists take `page` and `page_size` (at most 200), or walk by cursor with `after` / `before`
(constant cost at any depth); `pagination.next`, `previous` and `next_cursor` are ready-made paths.

**Versions and caching.** Every answer carries `X-API-Version: {API_VERSION}`; `Accept-Version` asks for one and
another is refused with 400. GETs carry an `ETag`: send it back in `If-None-Match` to get 304 Not Modified.

**Idempotency.** POSTs that create money records or start runs honour `Idempotency-Key` (Stripe's
semantics, kept 24 hours per token): a retry returns the stored answer with `Idempotent-Replayed: true`.

**Rate limits.** Per token (else per address), answered with `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
`X-RateLimit-Reset`; over the limit: 429 with `Retry-After`.

**Error codes.**

| code | status | meaning |
|---|---|---|
""" + "\n".join(f"| `{code}` | {status} | {meaning} |" for code, status, meaning in ERROR_CODES) + "\n"


def error_example(code: str, message: str, details: dict) -> dict:
    """Return an error envelope as the API sends it."""
    return {"success": False, "message": message, "error": {"code": code, "details": details},
            "timestamp": TIMESTAMP}


def register_components(spec, error_schema) -> None:
    """Register the headers, the header parameters, and an error response per HTTP status (examples included)."""
    for name, (description, schema, required) in HEADERS.items():
        spec.components.header(name, {"description": description, "schema": schema, "required": required})
    for name, parameter in PARAMETERS.items():
        spec.components.parameter(name, parameter["in"], {k: v for k, v in parameter.items() if k != "in"})
    for status in HTTPStatus:
        if status < 400:
            continue
        response = {"description": status.phrase, "content": {"application/json": {"schema": error_schema}},
                    "headers": {"X-API-Version": "X-API-Version"}}
        if status in EXAMPLES:
            response["description"] = f"{status.phrase}: {REASONS[status]}"
            examples = response["content"]["application/json"]["examples"] = {}
            for code, message, details in EXAMPLES[status]:
                name = code if code not in examples else f"{code}_{sum(k.startswith(code) for k in examples) + 1}"
                examples[name] = {"summary": message, "value": error_example(code, message, details)}
            response["headers"].update({name: name for name in ERROR_HEADERS.get(status, ())})
        if status == 429:
            response["headers"].update({name: name for name in RATE_LIMIT_HEADERS})
        # Lazy, as in flask-smorest: a status appears once an operation names it. No operation answers 405 (it is
        # the answer for a method a path lacks), so that one is always in the document.
        spec.components.response(status.name, response, lazy=status != 405)


class ApiConventions(BasePlugin):
    """Document, on every operation, what the app's request hooks and write decorators do around the view."""

    def __init__(self, app: Flask):
        self.app = app
        self.spec = None

    def init_spec(self, spec) -> None:
        """Keep the spec, to read the schemas the marshmallow plugin registered."""
        self.spec = spec

    def operation_helper(self, path=None, operations=None, **kwargs) -> None:
        """Add the header parameters, the success headers and the error statuses every operation may answer."""
        rule = kwargs.get("rule")
        view = self.app.view_functions.get(rule.endpoint) if rule is not None else None
        for method, operation in (operations or {}).items():
            complete_operation(method, operation, view, has_path_id="{" in (path or ""))
            if rule is not None:
                operation.setdefault("operationId", rule.endpoint.removeprefix("api_"))
            self._optional_body(operation)

    def _optional_body(self, operation: dict) -> None:
        """Mark a body optional when its schema requires no field: the API reads a missing body as {}."""
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        schema = body.get("schema")
        name = schema.get("$ref", "").rpartition("/")[2] if isinstance(schema, dict) else ""
        if name and not self.spec.components.schemas.get(name, {}).get("required"):
            operation["requestBody"]["required"] = False


def complete_operation(method: str, operation: dict, view, *, has_path_id: bool) -> None:
    """Complete one operation's documentation from its method and its view's decorators."""
    parameters = operation.setdefault("parameters", [])
    responses = operation.setdefault("responses", {})
    parameters.append("AcceptVersion")
    if getattr(view, "idempotent", False):
        parameters.append("IdempotencyKey")
    if method == "get":
        parameters.append("IfNoneMatch")
        responses[304] = {"description": "Not Modified: the copy named by If-None-Match is current.",
                          "headers": {"ETag": "ETag", "X-API-Version": "X-API-Version"}}
    for status, response in responses.items():
        status = str(status)  # flask-smorest keys responses by int, apispec by str
        if isinstance(response, dict) and status[0] == "2":
            headers = response.setdefault("headers", {})
            headers.update({name: name for name in ("X-API-Version", *RATE_LIMIT_HEADERS)})
            if method == "get":
                headers["ETag"] = "ETag"
            if status in ("201", "202"):
                headers["Location"] = "Location"
            if getattr(view, "idempotent", False):
                headers["Idempotent-Replayed"] = "Idempotent-Replayed"
    # Statuses the app's hooks give whatever the view: 415 for any body that is not JSON, 404 for an id beyond the
    # id range (a route miss), 500 for anything unexpected.
    extra = [500, *([415] if method in BODY_METHODS else []), *([404] if has_path_id else [])]
    documented = {str(status) for status in responses}
    for status in extra:
        if str(status) not in documented:
            responses[status] = HTTPStatus(status).name

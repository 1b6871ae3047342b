"""HTTP rules of every /api/ route: JSON bodies only (415), and conditional GETs (ETag, If-None-Match → 304)."""
from __future__ import annotations

import hashlib
import json

from flask import Flask, request

from isp_admin.errors import error_response

BODY_METHODS = ("POST", "PUT", "PATCH")


def is_api_request() -> bool:
    """Whether this request is for the JSON API (the docs and the spec included)."""
    return request.path == "/api" or request.path.startswith("/api/")


def _has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def body_etag(payload: bytes) -> str | None:
    """Return a strong ETag for an envelope: its content without the timestamp, which changes every time."""
    try:
        body = json.loads(payload)
    except ValueError:
        return None
    if isinstance(body, dict):
        body.pop("timestamp", None)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:32]


def register_http_rules(app: Flask) -> None:
    """Refuse non-JSON request bodies on the API and answer unchanged GETs with 304 Not Modified."""

    @app.before_request
    def refuse_other_media_types():
        if request.method in BODY_METHODS and is_api_request() and _has_body() and not request.is_json:
            sent = request.mimetype or "none"
            return error_response(415, "UNSUPPORTED_MEDIA_TYPE",
                                  f"Send the request body as application/json (got {sent[:60]}).",
                                  {"Content-Type": "Must be application/json."})
        if request.method in BODY_METHODS and is_api_request() and _has_body():
            try:
                json.loads(request.get_data(cache=True))
            except ValueError as exc:  # say where the JSON breaks, rather than a generic "bad request"
                return error_response(400, "VALIDATION_ERROR", f"The request body is not valid JSON: {exc}.",
                                      {"body": "Not valid JSON."})
        return None

    @app.after_request
    def conditional_get(response):
        if (request.method == "GET" and response.status_code == 200 and response.mimetype == "application/json"
                and is_api_request() and request.endpoint != "api_docs.openapi_json"):
            if response.get_etag()[0]:  # tagged by the view from data versions (api.common.version_etag)
                return response
            tag = body_etag(response.get_data())
            if tag:
                response.set_etag(tag)
                response.headers["Cache-Control"] = "private, no-cache"
                response.vary.add("Authorization")
                response.make_conditional(request)
        return response

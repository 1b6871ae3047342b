"""API versions: every /api/ response names its version; a request for another version is refused."""
from __future__ import annotations

from flask import Flask, request

from isp_admin.errors import error_response

API_VERSION = "1"
SUPPORTED_VERSIONS = frozenset({API_VERSION})


def _is_api_request() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def register_versioning(app: Flask) -> None:
    """Check Accept-Version on API requests and add X-API-Version to every API response."""

    @app.before_request
    def refuse_unsupported_version():
        requested = request.headers.get("Accept-Version")
        if requested is not None and _is_api_request() and requested.strip() not in SUPPORTED_VERSIONS:
            return error_response(
                400, "VALIDATION_ERROR",
                f"API version {requested.strip()[:20]!r} is not supported; this server speaks version {API_VERSION}.",
                {"Accept-Version": f"Supported: {', '.join(sorted(SUPPORTED_VERSIONS))}."})
        return None

    @app.after_request
    def name_the_version(response):
        if _is_api_request():
            response.headers["X-API-Version"] = API_VERSION
        return response

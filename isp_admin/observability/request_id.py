"""Request ids: accept a sane X-Request-ID from a proxy or make one, and return it on every response."""
from __future__ import annotations

import re
import uuid

from flask import Flask, g, request

_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def register_request_id(app: Flask) -> None:
    """Give every request an id (g.request_id) and echo it in X-Request-ID."""

    @app.before_request
    def assign_request_id() -> None:
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _VALID.fullmatch(incoming) else uuid.uuid4().hex

    @app.after_request
    def return_request_id(response):
        request_id = g.get("request_id")
        if request_id:
            response.headers["X-Request-ID"] = request_id
        return response

"""Argument errors of the API blueprints, as the error envelope with a message per field."""
from __future__ import annotations

from werkzeug.exceptions import UnprocessableEntity

from isp_admin.errors import error_response


def invalid_arguments(exc: UnprocessableEntity):
    """Turn webargs' {location: {field: [messages]}} into VALIDATION_ERROR details {field: message}."""
    messages = (getattr(exc, "data", None) or {}).get("messages", {})
    details = {
        field: " ".join(errors) if isinstance(errors, list) else str(errors)
        for by_field in messages.values()
        for field, errors in by_field.items()
    }
    return error_response(422, "VALIDATION_ERROR", "Please correct the highlighted fields.", details)

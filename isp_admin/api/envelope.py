"""The success envelope of DESIGN §4 and the marshmallow schemas that document it and the error envelope."""
from __future__ import annotations

from datetime import UTC, datetime

import marshmallow as ma
from flask import request, url_for


def timestamp() -> str:
    """Return now in UTC as the envelope's ISO-8601 timestamp with a Z."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope(data, message: str = "OK", pagination: dict | None = None) -> dict:
    """Wrap `data` in the success envelope."""
    body = {"success": True, "message": message, "data": data, "timestamp": timestamp()}
    if pagination is not None:
        body["pagination"] = pagination
    return body


def page_links(page: int, page_size: int, total: int) -> dict:
    """Return the pagination block for a short list paged by number only (the same shape as every list)."""
    pages = max(1, -(-total // page_size))
    kept = {k: v for k, v in request.args.items() if k != "page"}

    def link(number: int) -> str:
        return url_for(request.endpoint, **(request.view_args or {}), **{**kept, "page": number,
                                                                          "page_size": page_size})

    return {
        "page": page, "page_size": page_size, "total": total, "total_capped": False, "pages": pages,
        "next": link(page + 1) if page < pages else None,
        "previous": link(min(page - 1, pages)) if page > 1 else None,
        "next_cursor": None,
    }


class PageQuery(ma.Schema):
    """?page=&page_size= on every list; other query fields are refused (pass unknown=RAISE to arguments)."""

    # Bounded like ListQuery's: an unbounded page made an OFFSET beyond PostgreSQL's bigint (500).
    page = ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1, max=100_000))
    page_size = ma.fields.Integer(load_default=50, validate=ma.validate.Range(min=1, max=200))


class PaginationSchema(ma.Schema):
    """Where a page sits in the whole list."""

    page = ma.fields.Integer(allow_none=True, metadata={"description": "The page number; null when walking by "
                                                                       "cursor."})
    page_size = ma.fields.Integer()
    total = ma.fields.Integer(metadata={"description": "Matching records (at most 10,000 when total_capped)."})
    total_capped = ma.fields.Boolean(metadata={"description": "True when more than `total` records match a "
                                                              "filter: the count stops there."})
    pages = ma.fields.Integer(allow_none=True, metadata={"description": "null when the total is capped."})
    next = ma.fields.String(allow_none=True, metadata={"description": "Path of the next page, or null."})
    previous = ma.fields.String(allow_none=True, metadata={"description": "Path of the previous page, or null."})
    next_cursor = ma.fields.String(allow_none=True, metadata={
        "description": "Path of the next page by cursor: constant cost however deep (null at the end)."})


class ErrorDetailSchema(ma.Schema):
    """A stable code and, for validation errors, a message per field."""

    code = ma.fields.String(metadata={"description": "VALIDATION_ERROR, AUTHENTICATION_REQUIRED, "
                                                     "PERMISSION_DENIED, NOT_FOUND, CONFLICT, RATE_LIMITED, …"})
    details = ma.fields.Dict(keys=ma.fields.String(), metadata={"description": "Field name → message."})


class ErrorEnvelopeSchema(ma.Schema):
    """Every API error."""

    success = ma.fields.Boolean(metadata={"example": False})
    message = ma.fields.String()
    error = ma.fields.Nested(ErrorDetailSchema)
    timestamp = ma.fields.String()


def envelope_schema(name: str, data_schema: type[ma.Schema], *, many: bool = False,
                    nullable: bool = False) -> type[ma.Schema]:
    """Build the documented success envelope around `data_schema` (with pagination for lists)."""
    fields = {
        "success": ma.fields.Boolean(),
        "message": ma.fields.String(),
        "data": ma.fields.Nested(data_schema, many=many, allow_none=nullable),
        "timestamp": ma.fields.String(),
    }
    if many:
        fields["pagination"] = ma.fields.Nested(PaginationSchema)
    return ma.Schema.from_dict(fields, name=name)

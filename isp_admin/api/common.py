"""What every API resource shares: its blueprint, list arguments and pagination, and the write transaction."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import wraps
from http import HTTPStatus

import marshmallow as ma
from flask import Response, current_app, g, request, url_for
from flask_smorest import Blueprint

from isp_admin.api.arguments import ApiArgumentsParser
from isp_admin.api.envelope import envelope, timestamp
from isp_admin.api.errors import invalid_arguments
from isp_admin.api.versioning import API_VERSION
from isp_admin.autocommit import autocommit_reads
from isp_admin.services.platform import versions
from isp_admin.services.platform.pagination import Page

MAX_PAGE_SIZE = 200
CURSOR_ARGS = ("page", "after", "before")


def api_blueprint(name: str, import_name: str, url_prefix: str, description: str) -> Blueprint:
    """Return a resource blueprint whose argument errors answer VALIDATION_ERROR with a message per field."""
    blp = Blueprint(name, import_name, url_prefix=url_prefix, description=description)
    blp.ARGUMENTS_PARSER = ApiArgumentsParser()  # exact JSON types, storable text (isp_admin.api.arguments)
    blp.register_error_handler(422, invalid_arguments)
    return blp


class ListQuery(ma.Schema):
    """Page by number (?page=) or walk by cursor (?after= / ?before=, from a previous page's links)."""

    page = ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1, max=100_000))
    page_size = ma.fields.Integer(load_default=50, validate=ma.validate.Range(min=1, max=MAX_PAGE_SIZE))
    after = ma.fields.String(validate=ma.validate.Length(max=200),
                             metadata={"description": "Cursor: the page after this one (constant cost at any depth)."})
    before = ma.fields.String(validate=ma.validate.Length(max=200),
                              metadata={"description": "Cursor: the page before this one."})

    @ma.validates_schema
    def one_position(self, data, **_kwargs):
        """Refuse a request that names a cursor in both directions."""
        if data.get("after") and data.get("before"):
            raise ma.ValidationError("Give after or before, not both.", "before")


def ordering_field(choices: tuple[str, ...], default: str) -> ma.fields.String:
    """An ?ordering= field: a column name, or '-name' for descending."""
    allowed = [name for choice in choices for name in (choice, f"-{choice}")]
    return ma.fields.String(load_default=default, validate=ma.validate.OneOf(allowed),
                            metadata={"description": f"One of {', '.join(allowed)}."})


def page_window(args: dict) -> dict:
    """Return the keyword arguments a list service takes for this page: size, offset or cursor."""
    size = args["page_size"]
    if args.get("after") or args.get("before"):
        return {"size": size, "after": args.get("after"), "before": args.get("before")}
    return {"size": size, "offset": (args["page"] - 1) * size}


def _link(**position) -> str:
    kept = {k: v for k, v in request.args.items() if k not in CURSOR_ARGS}
    return url_for(request.endpoint, **(request.view_args or {}), **kept, **position)


def pagination(page: Page, args: dict) -> dict:
    """Return the pagination block: page, size, total (capped for broad filters), pages and neighbour links."""
    size, by_cursor = args["page_size"], bool(args.get("after") or args.get("before"))
    total = page.total if page.total is not None else 0
    number = None if by_cursor else args["page"]
    pages = None if page.total_capped else max(1, -(-total // size))
    if by_cursor:
        next_link = _link(after=page.next_cursor) if page.next_cursor else None
        previous = _link(before=page.prev_cursor) if page.prev_cursor else None
    else:
        next_link = _link(page=number + 1) if page.next_cursor else None
        previous = _link(page=min(number - 1, pages or number - 1)) if number > 1 else None
    return {
        "page": number, "page_size": size, "total": total, "total_capped": page.total_capped, "pages": pages,
        "next": next_link, "previous": previous,
        "next_cursor": _link(after=page.next_cursor) if page.next_cursor else None,
    }


def list_envelope(page: Page, args: dict) -> dict:
    """Return the success envelope of one list page (the view's response schema dumps the rows)."""
    return envelope(page.rows, pagination=pagination(page, args))


def documented(blp: Blueprint, *codes: int):
    """Document a view's error responses: those every route may give (400, 401, 403, 429) and `codes`.

    The responses are the components named after http.HTTPStatus, with examples (isp_admin.api.spec); 415 on
    writes with a body, 404 on paths with an id and 500 everywhere are added by the spec itself.
    """

    def decorate(view):
        for code in sorted({400, 401, 403, 429, *codes}):
            view = blp.alt_response(code, response=HTTPStatus(code).name)(view)
        return view

    return decorate


def version_etag(*tables: str) -> str | None:
    """Return the ETag of this GET from the data versions of `tables` and the exact query, or None (SQLite).

    The tag changes whenever one of the tables changes, so an unchanged list answers 304 without running its
    page query; the body itself is never hashed.
    """
    known = versions.current()
    if known is None or any(t not in known for t in tables):
        return None
    state = "|".join([API_VERSION, request.path, request.query_string.decode("latin-1"),
                      *(f"{t}={known[t]}" for t in tables)])
    return hashlib.sha256(state.encode()).hexdigest()[:32]


def _conditional_headers(response: Response, tag: str) -> Response:
    response.set_etag(tag)
    response.headers["Cache-Control"] = "private, no-cache"
    response.vary.add("Authorization")
    return response


def not_modified(tag: str | None) -> Response | None:
    """Return 304 Not Modified when the request's If-None-Match holds `tag`, else None."""
    # Weak comparison, as RFC 9110 asks of If-None-Match: a compressing proxy hands clients W/ tags.
    if tag is None or not request.if_none_match.contains_weak(tag):
        return None
    return _conditional_headers(Response(status=304), tag)


def answers_not_modified(tables: Callable[[], tuple[str, ...]]):
    """Answer a conditional GET with 304 before its page query runs, when the data is unchanged.

    Goes right above the view, under the access check and the arguments: a query is validated first, so an
    invalid one is refused even with `If-None-Match: *` or a tag it was once given (a rule may depend on the
    clock). The tag covers the exact query string; the view finds it in `g.version_etag` for its 200.
    """

    def decorate(view):
        @wraps(view)
        def conditional(*args, **kwargs):
            tag = version_etag(*tables())
            unchanged = not_modified(tag)
            if unchanged is not None:
                return unchanged
            g.version_etag = tag
            return view(*args, **kwargs)

        return autocommit_reads(conditional)  # one list page: its statements need no shared snapshot

    return decorate


def json_rows_response(rows: list[str], page: Page, args: dict, tag: str | None) -> Response:
    """Return a list's success envelope around JSON row texts made by the database, with its ETag."""
    def dumps(value) -> str:
        return current_app.json.dumps(value, separators=(",", ":"))  # compact, as jsonify answers outside debug

    # The keys in the order Flask's provider sorts them, so the envelope reads as every other list's.
    body = (f'{{"data":[{",".join(rows)}],"message":"OK","pagination":{dumps(pagination(page, args))},'
            f'"success":true,"timestamp":{dumps(timestamp())}}}')
    response = Response(body, status=200, mimetype="application/json")
    return _conditional_headers(response, tag) if tag else response

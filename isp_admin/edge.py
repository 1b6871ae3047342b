"""The request edge: garbage is refused with a 4xx before any view, parser or query sees it.

One before_request hook, for pages and API alike:
- a body larger than MAX_CONTENT_LENGTH is 413, before a byte of it is read (werkzeug also stops a chunked body
  at the limit while reading it);
- a JSON body nested deeper than JSON_MAX_DEPTH is 400, found by a scan of the raw text: the parser itself
  recurses, and a deep enough document was a RecursionError (500) in every API POST;
- NUL characters and invalid UTF-8 in the path, the query string or a form field are refused: PostgreSQL text
  cannot hold a NUL ("A string literal cannot contain NUL", a 500 from a list filter), and werkzeug would quietly
  turn invalid UTF-8 into U+FFFD. Percent-encoded surrogates are invalid UTF-8, so they are refused with it.

NUL characters and lone surrogates written as JSON escapes ("\\u0000", "\\ud800") parse to valid JSON; the API's
argument parser refuses those as field errors (isp_admin.api.arguments).
"""
from __future__ import annotations

import itertools
import json
import re
from urllib.parse import unquote_to_bytes

from flask import Flask, current_app, request

from isp_admin.errors import error_response

BODY_METHODS = ("POST", "PUT", "PATCH", "DELETE")
UNSTORABLE_MESSAGE = "Contains a NUL character or invalid UTF-8."

# A JSON string, escapes included; an unterminated one runs to the end (the parser refuses it later). Possessive,
# so a string that never ends costs one pass, not one pass per quote inside it.
JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\Z)', re.DOTALL)
NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
# Opening brackets become +1 and closing ones -1 (as signed bytes), so the running sum is the nesting depth.
DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")


class Refused(Exception):
    """A request the edge refuses: the status, a message, and the offending field names."""

    def __init__(self, status: int, message: str, details: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.details = status, message, details or {}


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether the JSON `text` nests arrays and objects more than `limit` deep (brackets inside strings aside)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # the common case: too few brackets to be that deep, wherever they are
    brackets = NOT_A_BRACKET.sub("", JSON_STRING.sub("", text)).encode("ascii")
    steps = memoryview(brackets.translate(DEPTH_STEPS)).cast("b")
    return max(itertools.accumulate(steps), default=0) > limit


def _decoded(raw: bytes) -> str | None:
    """Return `raw` as UTF-8 text, or None when it is invalid UTF-8 or holds a NUL."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if "\x00" in text else text


def unstorable_fields(encoded: bytes) -> list[str]:
    """Return the names of the fields of a query string or urlencoded form whose name or value is unstorable."""
    bad = []
    for pair in encoded.split(b"&"):
        name, _, value = pair.partition(b"=")
        raw_name = unquote_to_bytes(name.replace(b"+", b" "))
        if _decoded(raw_name) is None or _decoded(unquote_to_bytes(value.replace(b"+", b" "))) is None:
            bad.append(raw_name.decode("utf-8", "replace").replace("\x00", "\ufffd") or "?")
    return bad


UPLOAD_SETTINGS = "isp_admin.edge.upload_settings"  # app.extensions key: {endpoint: its upload limit's setting}
# What a multipart form adds around an uploaded file: boundaries, part headers, the CSRF token and a few options.
UPLOAD_FORM_OVERHEAD = 64 * 1024


def takes_upload(setting: str):
    """Let a view take a body up to the config value `setting` plus a form's overhead, not MAX_CONTENT_LENGTH."""
    def mark(view):
        view.upload_limit_setting = setting
        return view
    return mark


def _upload_setting(endpoint: str | None) -> str | None:
    # Looked up once per endpoint: a view's upload limit is set when it is defined.
    settings = current_app.extensions[UPLOAD_SETTINGS]
    if endpoint not in settings:
        view = current_app.view_functions.get(endpoint) if endpoint else None
        settings[endpoint] = getattr(view, "upload_limit_setting", None)
    return settings[endpoint]


def _body_limit() -> int | None:
    setting = _upload_setting(request.endpoint)
    if setting:
        # Werkzeug reads the form up to this limit too (a chunked body without a length is cut off there).
        request.max_content_length = current_app.config[setting] + UPLOAD_FORM_OVERHEAD
    return request.max_content_length


def _check_size() -> None:
    limit = _body_limit()
    if limit and request.content_length and request.content_length > limit:
        raise Refused(413, f"The request body is larger than the {limit:,} bytes allowed.",
                      {"body": f"At most {limit:,} bytes."})


def _check_path() -> None:
    # PATH_INFO holds the percent-decoded bytes as latin-1 (PEP 3333): refuse what no route could use.
    try:
        raw = request.environ.get("PATH_INFO", "").encode("latin-1")
    except UnicodeEncodeError:
        return  # a server that already decoded it; werkzeug routes it as it is
    if _decoded(raw) is None:
        raise Refused(400, "The path contains a NUL character or invalid UTF-8.", {"path": UNSTORABLE_MESSAGE})


def _field_status() -> int:
    # The API answers field errors with 422 and the field names, as its argument parser does; a page has no form
    # to show the error on (a filter, or a form posted by hand), so it answers the plain 400 page.
    return 422 if request.path.startswith("/api/") else 400


def _check_fields(encoded: bytes, where: str) -> None:
    bad = unstorable_fields(encoded)
    if bad:
        raise Refused(_field_status(), f"The {where} contains a NUL character or invalid UTF-8 "
                      f"(in {', '.join(bad[:5])}).", dict.fromkeys(bad, UNSTORABLE_MESSAGE))


def _check_json() -> None:
    data = request.get_data(cache=True)  # at most MAX_CONTENT_LENGTH bytes, checked above
    if not data:
        return
    try:
        # Strictly, where json.loads passes surrogates: raw-encoded ones are not UTF-8 (nor UTF-16), and Flask's
        # get_json would refuse them later anyway, with a message saying nothing of why.
        text = data.decode(json.detect_encoding(data))
    except UnicodeDecodeError:
        raise Refused(400, "The request body is not valid JSON: it is not valid Unicode text.",
                      {"body": "Not valid JSON."}) from None
    limit = current_app.config["JSON_MAX_DEPTH"]
    if json_depth_exceeds(text, limit):
        raise Refused(400, f"The request body nests arrays and objects more than {limit} levels deep.",
                      {"body": f"Nested more than {limit} levels deep."})


def _check_form() -> None:
    if request.mimetype == "application/x-www-form-urlencoded":
        _check_fields(request.get_data(cache=True), "form")
    elif request.mimetype == "multipart/form-data":
        # werkzeug has decoded the parts (invalid UTF-8 as U+FFFD, which a database stores); a NUL it keeps.
        bad = [name for name, value in request.form.items(multi=True) if "\x00" in name or "\x00" in value]
        if bad:
            raise Refused(_field_status(), "The form contains a NUL character.",
                          dict.fromkeys(bad, UNSTORABLE_MESSAGE))


def check_request() -> None:
    """Raise Refused when the request is too large, too deep, or carries text no column can store."""
    _check_size()
    _check_path()
    if request.query_string:
        _check_fields(request.query_string, "query string")
    if request.method in BODY_METHODS:
        if request.is_json:
            _check_json()
        else:
            _check_form()


def register_edge(app: Flask) -> None:
    """Refuse oversized, over-deep and unstorable requests before any view (MAX_CONTENT_LENGTH, JSON_MAX_DEPTH)."""
    app.extensions[UPLOAD_SETTINGS] = {}

    @app.before_request
    def refuse_garbage():
        try:
            check_request()
        except Refused as refused:
            return error_response(refused.status, "VALIDATION_ERROR", refused.message, refused.details)
        return None

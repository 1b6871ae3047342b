"""The request edge (isp_admin.edge): oversized, over-deep and unstorable requests get a 4xx, never a 500.

Each case was a 500 or an unbounded parse before the edge: deep JSON a RecursionError in every API POST, a NUL
in a staff list filter a database error, a 60 MB body parsed in full; and `If-None-Match: *` answered 304 to a
query the list would have refused.
"""
from __future__ import annotations

import json

import pytest

from isp_admin.api.common import version_etag
from isp_admin.config import load_config
from isp_admin.edge import json_depth_exceeds, unstorable_fields
from tests.api.helpers import assert_error, bearer
from tests.factories import CustomerFactory

URL = "/api/customers/"


@pytest.fixture
def writer():
    """Headers of an admin token with every scope."""
    return bearer("admin", "read,write,billing")


def nested(depth: int) -> str:
    """A JSON document of `depth` nested arrays."""
    return "[" * depth + "]" * depth


def post_json(client, url: str, raw: str | bytes, headers: dict):
    return client.post(url, data=raw, headers=headers, content_type="application/json")


# --- the depth scan -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "deepest"), [
    ("{}", 1), ("[[[]]]", 3), ('{"a": [{"b": [1]}]}', 4), ('["[[[[[", "{{{{"]', 1), (r'["\"[[[[[[", []]', 2),
    ('{"a": "unterminated [[[[[[', 1), (nested(5000), 5000), ("[]" * 5000, 1), ("", 0), ("123", 0),
])
def test_the_scan_counts_brackets_outside_strings_only(text, deepest):
    assert not json_depth_exceeds(text, deepest)
    if deepest:
        assert json_depth_exceeds(text, deepest - 1)


def test_an_unterminated_string_full_of_quotes_is_scanned_in_linear_time():
    import time

    text = '["' + '\\"[' * 300_000
    started = time.perf_counter()
    assert not json_depth_exceeds(text, 32)
    assert time.perf_counter() - started < 1.0


def test_unstorable_fields_are_named():
    assert unstorable_fields(b"a=1&b=%00&c=%FF&d%00=1&e=%ED%A0%80&f=caf%C3%A9&g=+") == ["b", "c", "d\ufffd", "e"]


# --- bodies ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [33, 1000, 5000, 100_000])
def test_json_nested_too_deep_is_a_400_envelope_before_parsing(client, writer, depth):
    response = post_json(client, URL, nested(depth), writer)
    assert_error(response, 400, "VALIDATION_ERROR")
    assert "32 levels" in response.get_json()["message"] and "body" in response.get_json()["error"]["details"]


def test_json_as_deep_as_the_limit_reaches_the_schema(client, writer):
    body = {"name": "Deep Notes Ltd", "notes": None}
    for _ in range(31):
        body = {"name": "Deep Notes Ltd", "notes": body}
    response = post_json(client, URL, json.dumps(body), writer)  # 32 levels: past the edge, refused by the schema
    assert_error(response, 422, "VALIDATION_ERROR")
    assert "notes" in response.get_json()["error"]["details"]


def test_the_depth_limit_comes_from_the_config(make_app, backends):
    app = make_app(JSON_MAX_DEPTH=2)
    with app.app_context():
        headers = bearer("admin", "read,write,billing")
        client = app.test_client()
        assert post_json(client, URL, '{"name": "Two Levels", "notes": null}', headers).status_code == 201
        assert_error(post_json(client, URL, '{"name": "x", "notes": [[1]]}', headers), 400, "VALIDATION_ERROR")


def test_brackets_inside_strings_do_not_count(client, writer):
    response = post_json(client, URL, json.dumps({"name": "Bracket Fan", "notes": "[" * 5000}), writer)
    assert response.status_code == 201, response.data[:300]


def test_a_body_over_the_size_limit_is_413_unread(client, writer):
    body = json.dumps({"name": "Big Notes", "notes": "x" * (1024 * 1024)})
    response = post_json(client, URL, body, writer)
    assert_error(response, 413, "VALIDATION_ERROR")
    assert "1,048,576 bytes" in response.get_json()["message"]


def test_a_page_form_over_the_size_limit_is_the_413_page(client, login):
    login("admin")
    response = client.post("/customers/new", data={"name": "Big", "notes": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413 and response.mimetype == "text/html"
    assert b"Request too large" in response.data


def test_the_size_limit_is_configurable():
    assert load_config("/tmp/edge-config", {"APP_ENV": "testing", "SECRET_KEY": "k"})["MAX_CONTENT_LENGTH"] == 1048576
    config = load_config("/tmp/edge-config", {"APP_ENV": "testing", "SECRET_KEY": "k", "MAX_CONTENT_LENGTH": "2048",
                                              "JSON_MAX_DEPTH": "8"})
    assert (config["MAX_CONTENT_LENGTH"], config["JSON_MAX_DEPTH"]) == (2048, 8)


UTF16_SURROGATE = '{"name": "a\ud800b"}'.encode("utf-16", "surrogatepass")


@pytest.mark.parametrize("raw", [b'{"name": "caf\xe9"}', b'{"name": "\xff\xfe\xfd"}', b'{"name": "a\xc0\x80b"}',
                                 b'{"name": "a\xed\xa0\x80b"}', UTF16_SURROGATE])
def test_invalid_unicode_in_a_json_body_is_a_400(client, writer, raw):
    response = post_json(client, URL, raw, writer)
    assert_error(response, 400, "VALIDATION_ERROR")
    assert "not valid Unicode" in response.get_json()["message"]


@pytest.mark.parametrize("raw", [b'{"name": "a\\u0000b"}', b'{"name": "a\\ud800b"}', b'{"name": "\\udfff"}'])
def test_nul_and_lone_surrogates_in_json_strings_are_field_errors(client, writer, raw):
    response = post_json(client, URL, raw, writer)
    assert_error(response, 422, "VALIDATION_ERROR")
    assert "name" in response.get_json()["error"]["details"]


# --- query strings, paths, forms ------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["search=%00", "search=%FF", "search=%ED%A0%80", "status=active%00"])
def test_unstorable_query_text_is_a_field_error_on_the_api(client, writer, query):
    response = client.get(f"{URL}?{query}", headers=writer)
    assert_error(response, 422, "VALIDATION_ERROR")
    assert query.split("=")[0] in response.get_json()["error"]["details"]


@pytest.mark.parametrize("url", ["/payments/?customer=%00", "/invoices/?number=%00", "/customers/?q=%00",
                                 "/invoices/?number=%C3%28", "/subscriptions/?q=%ED%A0%80"])
def test_unstorable_text_in_a_staff_list_filter_is_the_400_page(client, login, url):
    login("admin")
    response = client.get(url)
    assert response.status_code == 400 and response.mimetype == "text/html", response.data[:300]
    assert b"NUL character or invalid UTF-8" in response.data


def test_a_nul_in_a_staff_form_is_the_400_page_and_stores_nothing(client, login):
    login("admin")
    response = client.post("/customers/new", data={"name": "Nul\x00Name"})
    assert response.status_code == 400 and b"NUL character" in response.data
    raw = client.post("/customers/new", data=b"name=Bad%FFName", content_type="application/x-www-form-urlencoded")
    assert raw.status_code == 400


def test_a_nul_in_the_path_is_refused(client, writer):
    assert_error(client.get("/api/customers/%00/", headers=writer), 400, "VALIDATION_ERROR")


def test_clean_unicode_passes_the_edge(client, writer, login):
    response = client.get(f"{URL}?search=caf%C3%A9+%F0%9F%98%80", headers=writer)
    assert response.status_code == 200, response.data[:300]
    login("admin")
    assert client.get("/customers/?q=caf%C3%A9").status_code == 200


# --- conditional GETs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["?page=0", "?ordering=nonsense", "?page_size=100000", "?search=%00"])
def test_if_none_match_star_never_hides_an_invalid_query(client, writer, query):
    CustomerFactory()
    response = client.get(f"{URL}{query}", headers={**writer, "If-None-Match": "*"})
    assert_error(response, 422, "VALIDATION_ERROR")


def test_a_matching_tag_never_hides_an_invalid_query(app, client, writer):
    CustomerFactory()
    with app.test_request_context(f"{URL}?page=0"):
        tag = version_etag("customers")
    assert tag, "the list-versions ETag needs PostgreSQL"
    response = client.get(f"{URL}?page=0", headers={**writer, "If-None-Match": f'"{tag}"'})
    assert_error(response, 422, "VALIDATION_ERROR")


def test_a_valid_query_still_answers_304(client, writer):
    CustomerFactory()
    first = client.get(f"{URL}?page=1", headers=writer)
    assert first.status_code == 200
    assert client.get(f"{URL}?page=1", headers={**writer, "If-None-Match": first.headers["ETag"]}).status_code == 304
    assert client.get(f"{URL}?page=1", headers={**writer, "If-None-Match": "*"}).status_code == 304

"""The API's envelope, errors, authentication, versioning and documentation (DESIGN §4)."""
from __future__ import annotations

import re
from datetime import timedelta

from isp_admin.extensions import db
from isp_admin.models import ApiToken
from isp_admin.models.base import utcnow
from isp_admin.services.identity import tokens as token_service
from tests.api.helpers import assert_error, bearer
from tests.factories import PlanFactory, UserFactory


def test_no_token_is_401_with_a_bearer_challenge(client):
    response = client.get("/api/plans/")
    assert_error(response, 401, "AUTHENTICATION_REQUIRED")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="isp-admin"'


def test_a_session_cookie_does_not_authenticate_the_api(client, login):
    login("admin")
    assert_error(client.get("/api/plans/"), 401, "AUTHENTICATION_REQUIRED")


def test_other_schemes_and_unknown_tokens_are_401(client):
    assert_error(client.get("/api/plans/", headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401,
                 "AUTHENTICATION_REQUIRED")
    response = client.get("/api/plans/", headers={"Authorization": "Bearer ispa_nonsense"})
    body = assert_error(response, 401, "AUTHENTICATION_REQUIRED")
    assert "not valid" in body["message"]
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_expired_and_revoked_tokens_get_their_own_messages(client):
    user = UserFactory(role="support")
    expired = bearer(user=user, expires_at=utcnow() - timedelta(minutes=1))
    revoked = bearer(user=user)
    token = db.session.query(ApiToken).order_by(ApiToken.id.desc()).first()
    token_service.revoke_token(token.id, user.id)
    db.session.commit()

    expired_body = assert_error(client.get("/api/plans/", headers=expired), 401, "AUTHENTICATION_REQUIRED")
    revoked_body = assert_error(client.get("/api/plans/", headers=revoked), 401, "AUTHENTICATION_REQUIRED")
    assert "expired" in expired_body["message"] and "revoked" in revoked_body["message"]


def test_a_deactivated_owners_token_stops_working(client):
    user = UserFactory(role="billing")
    headers = bearer(user=user)
    user.active = False
    db.session.commit()
    body = assert_error(client.get("/api/plans/", headers=headers), 401, "AUTHENTICATION_REQUIRED")
    assert "deactivated" in body["message"]


def test_a_token_in_the_query_string_is_refused_even_when_valid(client):
    secret = bearer()["Authorization"].split()[1]
    for name in ("access_token", "token"):
        body = assert_error(client.get(f"/api/plans/?{name}={secret}"), 400, "VALIDATION_ERROR")
        assert "Authorization header" in body["message"] and name in body["error"]["details"]


def test_a_token_without_the_scope_is_403(client):
    body = assert_error(client.get("/api/plans/", headers=bearer("billing", scopes="billing")), 403,
                        "PERMISSION_DENIED")
    assert "read scope" in body["message"]


def test_a_token_never_outgrows_its_owners_role(client):
    # A readonly user's token can only ever be a read token, and stops writing if its owner is downgraded.
    user = UserFactory(role="support")
    headers = bearer(user=user, scopes="read,write")
    user.role = "readonly"
    db.session.commit()
    assert not token_service.role_allows_scope("readonly", "write")
    assert not token_service.role_allows_scope("readonly", "billing")
    assert client.get("/api/plans/", headers=headers).status_code == 200  # reading is still in its role


def test_last_used_is_recorded(client):
    headers = bearer()
    assert client.get("/api/plans/", headers=headers).status_code == 200
    assert db.session.query(ApiToken).one().last_used_at is not None


def test_validation_errors_name_each_field_and_unknown_fields_are_rejected(client):
    headers = bearer()
    body = assert_error(client.get("/api/plans/?page=0&page_size=500&colour=red", headers=headers), 422,
                        "VALIDATION_ERROR")
    assert set(body["error"]["details"]) == {"page", "page_size", "colour"}
    assert "Unknown field" in body["error"]["details"]["colour"]


def test_not_found_is_the_envelope_for_api_paths_and_html_for_pages(client):
    assert_error(client.get("/api/plans/999/", headers=bearer()), 404, "NOT_FOUND")
    assert_error(client.get("/api/nope"), 404, "NOT_FOUND")
    page = client.get("/nope")
    assert page.status_code == 404 and page.content_type.startswith("text/html")
    assert "X-API-Version" not in page.headers


def test_405_keeps_its_allow_header(client, login):
    response = client.post("/api/billing/stats/invoices/", headers=bearer())
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    login("admin")
    page = client.put("/plans/")
    assert page.status_code == 405 and page.content_type.startswith("text/html") and "GET" in page.headers["Allow"]


def test_an_unsupported_api_version_is_a_clear_400(client):
    headers = bearer()
    PlanFactory()
    assert client.get("/api/plans/", headers={**headers, "Accept-Version": "1"}).status_code == 200
    body = assert_error(client.get("/api/plans/", headers={**headers, "Accept-Version": "2"}), 400,
                        "VALIDATION_ERROR")
    assert "version" in body["message"] and "Accept-Version" in body["error"]["details"]


def test_every_api_response_names_its_version(client):
    for url in ("/api/plans/", "/api/openapi.json", "/api/docs/", "/api/nope"):
        assert client.get(url).headers["X-API-Version"] == "1", url
    assert "X-API-Version" not in client.get("/login").headers


def test_the_api_needs_no_csrf_token(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    with app.app_context():
        headers = bearer("support", "read,write")
        response = app.test_client().post("/api/customers/", headers=headers, json={"name": "No Csrf"})
    assert response.status_code == 201  # a token, not a cookie: no CSRF token needed


def test_the_openapi_document_is_generated_from_the_code(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    spec = response.get_json()
    assert spec["openapi"].startswith("3.")
    assert {"/api/plans/", "/api/plans/{plan_id}/"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "An API token from /account/tokens."}
    assert spec["security"] == [{"bearerAuth": []}]
    assert set(spec["components"]["schemas"]["ErrorEnvelope"]["properties"]) == {
        "success", "message", "error", "timestamp"}
    listing = spec["paths"]["/api/plans/"]["get"]
    assert {"200", "401", "403", "422"} <= set(listing["responses"])
    assert {p["name"] for p in listing["parameters"] if p.get("in") == "query"} == {"page", "page_size"}


def test_the_docs_page_loads_only_local_assets_under_the_strict_csp(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.text
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    assert "<style" not in html and " style=" not in html
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"https?://", html)
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        with client.get(asset) as served:
            assert served.status_code == 200, asset


def test_a_malformed_json_body_says_where_it_breaks(client):
    headers = {**bearer("support", "read,write"), "Content-Type": "application/json"}
    response = client.post("/api/customers/", data='{"name": "Ann",}', headers=headers)
    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert body["message"].startswith("The request body is not valid JSON: ") and "column" in body["message"]
    assert body["error"]["details"] == {"body": "Not valid JSON."}

"""Error pages under /portal wear the portal's layout: a customer never sees the staff menu or a staff link, and
what is not theirs stays a 404. Staff pages keep the staff error page."""
from __future__ import annotations

from tests.portal.conftest import portal_customer, portal_sign_in

STAFF_TRACES = ('href="/customers/"', 'href="/plans/"', "Back to the dashboard", "· ISP Admin</title>")


def _is_portal_error(response, status: int) -> str:
    body = response.get_data(as_text=True)
    assert response.status_code == status, (response.status_code, body[:300])
    assert 'data-testid="portal-error"' in body and '<body class="portal">' in body
    assert "customer portal</title>" in body and 'href="/portal/">Back to your account</a>' in body
    assert [trace for trace in STAFF_TRACES if trace in body] == []
    return body


def test_a_missing_or_foreign_invoice_is_a_portal_404_with_the_customers_own_menu(app, world):
    a, b = world
    client = app.test_client()
    assert portal_sign_in(client, a.customer.account_number).status_code == 302
    for path in ("/portal/invoices/999999", f"/portal/invoices/{b.invoice}"):
        body = _is_portal_error(client.get(path), 404)
        assert "No such invoice" in body or "not found" in body.lower()
        assert a.customer.account_number in body and 'href="/portal/invoices"' in body  # their own menu
        assert b.customer.account_number not in body and b.invoice_number not in body


def test_a_portal_url_that_matches_no_route_is_a_portal_404(app, client, login):
    customer, _ = portal_customer()
    portal_sign_in(client, customer.account_number)
    body = _is_portal_error(client.get("/portal/no-such-page"), 404)
    assert customer.account_number not in body  # no route, no guard: nobody is named, not even the customer
    login("admin")  # a staff session on the same client changes nothing under /portal
    _is_portal_error(client.get("/portal/no-such-page"), 404)


def test_a_wrong_method_and_a_rate_limit_are_portal_pages_too(make_app):
    limited = make_app(RATELIMIT_ENABLED=True, RATE_LIMIT_LOGIN="1/minute")
    with limited.app_context():
        client = limited.test_client()
        wrong_method = client.put("/portal/login")
        _is_portal_error(wrong_method, 405)
        assert "POST" in wrong_method.headers["Allow"]
        environ = {"REMOTE_ADDR": "203.0.113.77"}
        client.post("/portal/login", data={"identifier": "C00000001", "password": "x"}, environ_base=environ)
        limited_answer = client.post("/portal/login", data={"identifier": "C00000001", "password": "x"},
                                     environ_base=environ)
        _is_portal_error(limited_answer, 429)
        assert int(limited_answer.headers["Retry-After"]) >= 1


def test_staff_and_json_errors_are_unchanged(app, client, login):
    login("admin")
    staff = client.get("/customers/999999")
    body = staff.get_data(as_text=True)
    assert staff.status_code == 404 and "Back to the dashboard" in body and 'data-testid="portal-error"' not in body
    as_json = client.get("/portal/no-such-page", headers={"Accept": "application/json"})
    assert as_json.status_code == 404 and as_json.get_json()["error"]["code"] == "NOT_FOUND"

"""Every portal page renders whole, mobile-first, with no inline script or style (CSP 'self'), empty states included."""
from __future__ import annotations

from isp_admin.services.portal import accounts
from tests.portal.conftest import portal_customer, portal_sign_in
from tests.web.test_security_headers import inline_code


def _args(r) -> dict:
    return {"invoice_id": r.invoice, "credit_note_id": r.credit_note, "subscription_id": r.subscription,
            "request_id": r.request, "public_id": r.attempt, "token": accounts.make_link_token(r.account)}


def test_no_portal_page_needs_inline_script_or_style(app, world):
    a, _ = world
    args = _args(a)
    anonymous, client = app.test_client(), app.test_client()
    assert portal_sign_in(client, a.customer.account_number).status_code == 302
    pages = {}
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("portal.") or "GET" not in rule.methods or rule.rule.endswith(".pdf"):
            continue
        url = rule.build({name: args[name] for name in rule.arguments})[1]
        public = rule.endpoint in ("portal.login", "portal.password_link", "portal.set_password")
        response = (anonymous if public else client).get(url)
        assert response.status_code == 200, (url, response.status_code)
        pages[url] = response.get_data(as_text=True)
    pages["not found"] = client.get("/portal/invoices/999999").get_data(as_text=True)
    pages["failed sign-in"] = portal_sign_in(anonymous, "C00000000", "wrong password").get_data(as_text=True)
    pages["invalid profile"] = client.post("/portal/profile", data={"email": "not an email"}).get_data(as_text=True)
    found = {name: inline_code(page) for name, page in pages.items()}
    assert {name: problems for name, problems in found.items() if problems} == {}
    assert all("</html>" in page for page in pages.values())
    assert len(pages) >= 16
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in pages["/portal/"]


def test_every_list_has_an_empty_state(app, client):
    customer, _ = portal_customer()
    portal_sign_in(client, customer.account_number)
    expected = {"/portal/invoices": "No invoices yet", "/portal/credit-notes": "No credit notes",
                "/portal/payments": "No payments yet", "/portal/usage": "No services",
                "/portal/pay": "Nothing to pay", "/portal/plan-change": "You have not asked for a plan change",
                "/portal/statement": "Nothing happened on your account", "/portal/": "no services with us yet"}
    for path, text in expected.items():
        assert text in client.get(path).get_data(as_text=True), path

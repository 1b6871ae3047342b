"""Every portal GET page, signed in as a customer on the production app, scores A+ by the HTTP Observatory's rules,
and the portal's sign-in and sign-out cookies score full marks (the scorer is tests/test_observatory.py's)."""
from __future__ import annotations

from isp_admin.extensions import db
from isp_admin.services.portal import accounts
from tests.factories import PASSWORD
from tests.test_observatory import HOST, Scan, cookies_test, csrf_token, grade, observatory_score, scan_route


def _portal_sign_in(client, account_number: str):
    form = client.get(f"https://{HOST}/portal/login")
    response = client.post(f"https://{HOST}/portal/login", headers={"Referer": f"https://{HOST}/portal/login"},
                           data={"identifier": account_number, "password": PASSWORD,
                                 "csrf_token": csrf_token(form.text)})
    assert response.status_code == 302, response.text[:300]
    return form, response


def test_every_portal_page_scores_a_plus_in_production(app, production, world):
    a, _ = world
    account = db.session.get(type(a.account), a.account.id)
    with production.app_context():  # signed with production's secret; no query (the row is the test's)
        token = accounts.make_link_token(account)
    args = {"invoice_id": a.invoice, "credit_note_id": a.credit_note, "subscription_id": a.subscription,
            "request_id": a.request, "public_id": a.attempt, "token": token}
    customer, anonymous = production.test_client(), production.test_client()
    _portal_sign_in(customer, a.customer.account_number)
    table = []
    for rule in sorted(production.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.endpoint.startswith("portal.") or "GET" not in rule.methods:
            continue
        path = rule.build({name: args[name] for name in rule.arguments})[1]
        public = rule.endpoint in ("portal.login", "portal.password_link", "portal.set_password")
        scan = scan_route(anonymous if public else customer, path)
        assert scan.response.status_code == 200, (path, scan.response.status_code)
        assert scan.headers["Cache-Control"] == "no-store", path
        score, results = observatory_score(scan)
        table.append((path, score, results))
    print("\nHTTP Observatory score per portal page (production config)")
    for path, score, _ in table:
        print(f"  {score:4d} {grade(score):2s} {path}")
    assert {path: (score, results) for path, score, results in table if score < 100} == {}
    assert len(table) >= 15


def test_portal_sign_in_and_sign_out_cookies_score_full_marks(app, production, world):
    a, _ = world
    client = production.test_client()
    form, signed_in = _portal_sign_in(client, a.customer.account_number)
    dashboard = client.get(f"https://{HOST}/portal/")
    signed_out = client.post(f"https://{HOST}/portal/logout", headers={"Referer": f"https://{HOST}/portal/"},
                             data={"csrf_token": csrf_token(dashboard.text)})
    assert signed_out.status_code == 302
    assert any(c.startswith(f"{production.config['PORTAL_SESSION_COOKIE_NAME']}=")
               for c in signed_in.headers.getlist("Set-Cookie"))
    for step, response in {"login form": form, "sign-in": signed_in, "sign-out": signed_out}.items():
        scan = Scan(f"https://{HOST}/portal/login", response, [],
                    set_cookies=response.headers.getlist("Set-Cookie"))
        assert cookies_test(scan) == ("cookies-secure-with-httponly-sessions-and-samesite", 5), step

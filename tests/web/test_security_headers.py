"""Security headers and cookies, in testing and in production, and pages the CSP would not break."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from isp_admin import create_app
from isp_admin.config import load_config
from isp_admin.extensions import db
from isp_admin.services.users import make_reset_token
from tests.factories import PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory
from tests.web.billing_world import billing_records

ONE_YEAR = 31536000


def csp_directives(response) -> dict[str, str]:
    """Parse the Content-Security-Policy header into {directive: sources}."""
    policy = response.headers["Content-Security-Policy"]
    directives = {}
    for part in policy.split(";"):
        name, _, sources = part.strip().partition(" ")
        directives[name] = sources.strip()
    return directives


def assert_security_headers(response) -> None:
    policy = response.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    directives = csp_directives(response)
    assert directives["default-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def session_cookie(response) -> str:
    """Return the Set-Cookie header of the session cookie."""
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert len(cookies) == 1, response.headers.getlist("Set-Cookie")
    return cookies[0]


def cookie_flags(set_cookie: str) -> set[str]:
    return {part.strip().lower() for part in set_cookie.split(";")[1:]}


def sign_in(client, user, base_url="http://localhost", **extra):
    response = client.post("/login", base_url=base_url, data={"email": user.email, "password": PASSWORD, **extra})
    assert response.status_code == 302
    return response


def test_login_page_headers(client):
    response = client.get("/login")

    assert response.status_code == 200
    assert_security_headers(response)
    assert "Strict-Transport-Security" not in response.headers


def test_dashboard_headers(client):
    sign_in(client, UserFactory(role="readonly"))

    response = client.get("/")

    assert response.status_code == 200
    assert_security_headers(response)
    assert "Strict-Transport-Security" not in response.headers


def test_static_file_headers(client):
    with client.get("/static/css/app.css") as response:
        assert response.status_code == 200
        assert_security_headers(response)
        assert "Strict-Transport-Security" not in response.headers


def test_session_cookie_is_http_only_and_same_site_but_not_secure_in_testing(client):
    response = sign_in(client, UserFactory(), remember="y")

    flags = cookie_flags(session_cookie(response))
    assert {"httponly", "samesite=lax"} <= flags
    assert "secure" not in flags


@pytest.fixture
def production_app(app, backends, tmp_path, monkeypatch):
    """An app built from a production environment (Talisman reads its settings once, at init)."""
    env = {
        "APP_ENV": "production",
        "SECRET_KEY": "production-secret-used-only-by-this-test",
        "DATABASE_URL": backends["database_url"],
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        "WTF_CSRF_ENABLED": "false",
        "RATELIMIT_ENABLED": "false",
        "CACHE_KEY_PREFIX": f"test:{tmp_path.name}:production:",
    }
    if backends["redis_url"]:
        env["REDIS_URL"] = backends["redis_url"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    production = create_app(load_config(tmp_path / "production-instance"))
    assert production.config["PRODUCTION"] and not production.config["TESTING"]
    yield production
    with production.app_context():
        db.session.remove()
        db.engine.dispose()


def test_production_redirects_plain_http_to_https(production_app):
    response = production_app.test_client().get("/login")

    assert response.status_code in (301, 302)
    assert response.headers["Location"].startswith("https://")


def test_production_sends_hsts_and_secure_cookies(production_app):
    client = production_app.test_client()

    page = client.get("/login", base_url="https://localhost")
    signed_in = sign_in(client, UserFactory(), base_url="https://localhost", remember="y")

    assert page.status_code == 200
    assert_security_headers(page)
    hsts = page.headers["Strict-Transport-Security"]
    assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= ONE_YEAR
    assert {"secure", "httponly", "samesite=lax"} <= cookie_flags(session_cookie(signed_in))
    remember = [c for c in signed_in.headers.getlist("Set-Cookie") if c.startswith("remember_token=")]
    assert len(remember) == 1
    assert {"secure", "httponly", "samesite=lax"} <= cookie_flags(remember[0])


class InlineCodeFinder(HTMLParser):
    """Collect what a CSP without 'unsafe-inline' blocks: inline scripts, styles and event handlers."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        names = {name.lower(): value for name, value in attrs}
        if tag == "script" and not names.get("src"):
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style>")
        if "style" in names:
            self.found.append(f"style= on <{tag}>")
        self.found.extend(f"{name}= on <{tag}>" for name in names if name.startswith("on"))
        if (names.get("href") or "").strip().lower().startswith("javascript:"):
            self.found.append(f"javascript: link on <{tag}>")


def inline_code(html: str) -> list[str]:
    finder = InlineCodeFinder()
    finder.feed(html)
    finder.close()
    return finder.found


def test_the_scanner_finds_inline_code():
    html = ('<style>p{}</style><p style="x">a</p><script>alert(1)</script><script src="/static/js/app.js"></script>'
            '<button onclick="go()">b</button><a href="javascript:go()">c</a>')
    assert inline_code(html) == ["<style>", "style= on <p>", "<script> without src", "onclick= on <button>",
                                 "javascript: link on <a>"]


@pytest.fixture
def page_args(app):
    """Records for every page of the panel, by URL argument name."""
    PlanFactory(active=False)
    customer = CustomerFactory(name="Jane Wairimu")
    subscription = SubscriptionFactory(customer=customer, pppoe_username="jane-home", static_ip="203.0.113.7")
    SubscriptionFactory(customer=customer, status="suspended", suspension_reason="manual")
    staff = UserFactory(role="support")
    billing = billing_records(customer.id)  # a draft invoice (its edit page too), a payment, a job run
    return {"customer_id": subscription.customer_id, "subscription_id": subscription.id,
            "plan_id": subscription.plan_id, "user_id": staff.id, "token": make_reset_token(staff),
            "invoice_id": billing["draft"], "payment_id": billing["payment"], "job_run_id": billing["job_run"]}


def test_no_page_needs_inline_script_or_style(app, client, page_args):
    sign_in(client, UserFactory(role="admin"))
    anonymous = app.test_client()

    def html(client_, method, url, status=200, **kwargs):
        # A fresh app context per request, so Flask-Login's `g` cache cannot carry one client's user to another.
        with app.app_context():
            response = client_.open(url, method=method, **kwargs)
        assert response.status_code == status, (method, url, response.status_code)
        return response.get_data(as_text=True)

    pages = {}
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint in ("static", "bootstrap.static"):
            continue
        if rule.endpoint.startswith("health.") or rule.rule.endswith((".pdf", ".json", ".csv")):
            continue  # JSON, PDF or CSV, no HTML
        if rule.rule.startswith("/api/") and rule.endpoint != "api_docs.swagger_ui":
            continue  # the JSON API (its HTML docs page is checked like any other)
        url = rule.build({name: page_args[name] for name in rule.arguments})[1]
        pages[url] = html(anonymous if rule.endpoint == "auth.login" else client, "GET", url)
    pages["filtered list"] = html(client, "GET", "/customers/?q=jane&status=active")
    pages["error page"] = html(client, "GET", "/no/such/page", status=404)
    pages["invalid customer form"] = html(client, "POST", "/customers/new", data={"name": ""})
    pages["invalid suspension"] = html(client, "POST", f"/subscriptions/{page_args['subscription_id']}/suspend",
                                       status=422, data={"reason": "nonsense"})
    pages["failed sign-in"] = html(anonymous, "POST", "/login", data={"email": "x@isp.example", "password": "wrong"})

    found = {name: inline_code(page) for name, page in pages.items()}
    assert {name: problems for name, problems in found.items() if problems} == {}
    assert len(pages) >= 20
    assert all("</html>" in page for page in pages.values())

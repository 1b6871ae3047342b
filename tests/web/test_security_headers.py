"""Security headers, cookies, caching and CORS, in testing and in production, and pages the CSP would not break."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from isp_admin import create_app
from isp_admin.config import ConfigError, load_config
from isp_admin.extensions import db
from isp_admin.models import Nas
from isp_admin.security import CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS
from isp_admin.services.identity.users import make_reset_token
from tests.api.helpers import bearer
from tests.conftest import RUN_ID, clean_context
from tests.factories import PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory
from tests.web.billing_world import billing_records, document_records

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
    assert directives["default-src"] == "'none'"  # deny by default; each kind of resource is allowed by name
    assert {directives[name] for name in ("script-src", "style-src", "font-src", "connect-src")} == {"'self'"}
    assert directives["img-src"] == "'self' data:"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert directives["object-src"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert response.headers["Cross-Origin-Resource-Policy"] == "same-origin"
    assert response.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert access_control(response) == {}  # CORS is off unless CORS_ALLOWED_ORIGINS lists origins


def session_cookie(response, name: str = "session") -> str:
    """Return the Set-Cookie header of the session cookie."""
    cookies = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(f"{name}=")]
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
        "APP_ENV": "production", "PUBLIC_URL": "https://isp.example.com",
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
    assert {"secure", "httponly", "samesite=lax"} <= cookie_flags(session_cookie(signed_in, "__Host-session"))
    remember = [c for c in signed_in.headers.getlist("Set-Cookie") if c.startswith("__Host-remember_token=")]
    assert len(remember) == 1
    # A __Host- cookie: Secure, Path=/ and no Domain, so a sibling host cannot plant or overwrite it.
    assert {"secure", "httponly", "samesite=lax", "path=/"} <= cookie_flags(remember[0])
    assert not any(flag.startswith("domain=") for flag in cookie_flags(remember[0]))


def test_every_cookie_of_sign_in_and_sign_out_is_hardened_in_production(production_app):
    client = production_app.test_client()
    user = UserFactory()

    responses = {"login form": client.get("/login", base_url="https://localhost"),
                 "sign-in": sign_in(client, user, base_url="https://localhost", remember="y"),
                 "dashboard": client.get("/", base_url="https://localhost"),
                 "sign-out": client.post("/logout", base_url="https://localhost")}

    set_cookies = {step: response.headers.getlist("Set-Cookie") for step, response in responses.items()}
    assert sorted(c.split("=")[0] for c in set_cookies["sign-in"]) == ["__Host-remember_token", "__Host-session"]
    assert sorted(c.split("=")[0] for c in set_cookies["sign-out"]) == ["__Host-remember_token", "__Host-session"]
    for step, cookies in set_cookies.items():
        for cookie in cookies:
            name, flags = cookie.split("=")[0], cookie_flags(cookie)
            if name.startswith("__Host-"):
                # Browsers drop a __Host- cookie, its deletion included, unless Secure, Path=/ and host-only.
                assert {"secure", "path=/"} <= flags and not any(f.startswith("domain=") for f in flags), cookie
            if "max-age=0" in flags:
                continue  # a deletion (sign-out): it stores nothing, and its flags do not matter to browsers
            assert {"secure", "httponly", "samesite=lax"} <= flags, (step, cookie)
    # Sign-out deletes the remember-me cookie; the session cookie stays only to carry the "signed out" message.
    assert [c for c in set_cookies["sign-out"] if "max-age=0" in cookie_flags(c)] == [
        c for c in set_cookies["sign-out"] if c.startswith("__Host-remember_token=")]
    assert client.get("/", base_url="https://localhost").status_code == 302  # signed out for real


def test_signed_in_pages_are_never_stored_but_static_files_and_public_pages_keep_their_caching(client):
    anonymous_login = client.get("/login")
    sign_in(client, UserFactory(role="admin"))

    assert client.get("/").headers["Cache-Control"] == "no-store"
    assert client.get("/customers/").headers["Cache-Control"] == "no-store"
    assert client.get("/no/such/page").headers["Cache-Control"] == "no-store"  # even an error page names the user
    assert client.post("/customers/new", data={"name": ""}).headers["Cache-Control"] == "no-store"
    with client.get("/static/css/app.css") as static:
        assert static.headers["Cache-Control"] == "no-cache"  # same for everyone: revalidated, not refetched
    assert "Cache-Control" not in anonymous_login.headers


def test_api_answers_keep_etag_revalidation_and_others_are_never_stored(client):
    headers = bearer("admin", "read,write")
    CustomerFactory(name="Ann")

    listing = client.get("/api/customers/", headers=headers)
    again = client.get("/api/customers/", headers={**headers, "If-None-Match": listing.headers["ETag"]})
    missing = client.get("/api/customers/999999/", headers=headers)
    created = client.post("/api/customers/", headers=headers, json={"name": "Bo"})

    assert listing.headers["Cache-Control"] == "private, no-cache" and listing.headers["ETag"]
    assert again.status_code == 304 and again.headers["Cache-Control"] == "private, no-cache"
    assert missing.status_code == 404 and missing.headers["Cache-Control"] == "no-store"
    assert created.status_code == 201 and created.headers["Cache-Control"] == "no-store"


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
    router = Nas(nasname="192.0.2.1", shortname="bras-1", type="mikrotik", secret="router-secret")
    db.session.add(router)
    db.session.commit()
    return {**document_records(customer.id), "nas_id": router.id,
            "customer_id": subscription.customer_id, "subscription_id": subscription.id,
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
        if rule.endpoint.startswith(("health.", "metrics.")) or rule.rule.endswith((".pdf", ".json", ".csv")):
            continue  # JSON, PDF, CSV or Prometheus text, no HTML
        if rule.rule.startswith("/api/") and rule.endpoint != "api_docs.swagger_ui":
            continue  # the JSON API (its HTML docs page is checked like any other)
        if rule.endpoint.startswith("portal."):
            continue  # the subscribers' pages need a customer's sign-in, not staff's: scanned in tests/portal/
        url = rule.build({name: page_args[name] for name in rule.arguments})[1]
        pages[url] = html(anonymous if rule.endpoint == "auth.login" else client, "GET", url,
                          status=404 if rule.endpoint == "dev.mail_message" else 200)  # no such mail: its 404 page
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


APP_ORIGIN = "https://app.isp.example"
PREFLIGHT = {"Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"}


def access_control(response) -> dict[str, str]:
    """Return the response's Access-Control-* headers."""
    return {name: value for name, value in response.headers.items() if name.startswith("Access-Control-")}


def test_cors_is_off_by_default(client):
    headers = bearer("readonly")

    read = client.get("/api/customers/", headers={**headers, "Origin": APP_ORIGIN})
    preflight = client.options("/api/customers/", headers=PREFLIGHT)

    assert read.status_code == 200 and access_control(read) == {}
    assert access_control(preflight) == {} and "Origin" not in read.headers.get("Vary", "")


@pytest.fixture
def cors_app(make_app, tmp_path):
    """An app whose API accepts browser calls from APP_ORIGIN, with a tight anonymous rate limit."""
    with clean_context(make_app(CORS_ALLOWED_ORIGINS=[f"{APP_ORIGIN}:443/", "http://localhost:5173"],
                                RATELIMIT_ENABLED=True, RATE_LIMIT_ANONYMOUS="3/minute",
                                RATELIMIT_KEY_PREFIX=f"test-rl:{RUN_ID}:cors:{tmp_path.name}")) as app:
        yield app


def test_an_allowed_origin_gets_a_preflight_grant_without_spending_the_rate_limit(cors_app):
    client = cors_app.test_client()

    preflights = [client.options("/api/customers/", headers=PREFLIGHT) for _ in range(5)]

    assert [response.status_code for response in preflights] == [204] * 5  # the anonymous limit is 3/minute
    assert access_control(preflights[0]) == {
        "Access-Control-Allow-Origin": APP_ORIGIN,
        "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE",
        "Access-Control-Allow-Headers": ", ".join(CORS_ALLOW_HEADERS),
        "Access-Control-Max-Age": "600",
    }
    assert "Origin" in preflights[0].headers["Vary"]


def test_an_allowed_origin_reads_api_answers_and_their_headers_but_never_with_credentials(cors_app):
    client = cors_app.test_client()
    headers = {**bearer("admin", "read,write"), "Origin": APP_ORIGIN}

    read = client.get("/api/customers/", headers=headers)
    created = client.post("/api/customers/", headers={**headers, "Idempotency-Key": "cors-1"}, json={"name": "Ann"})
    refused = client.get("/api/customers/", headers={"Origin": APP_ORIGIN})
    local = client.get("/api/plans/", headers={**headers, "Origin": "http://localhost:5173"})

    for response in (read, created, refused, local):
        assert response.headers["Access-Control-Allow-Origin"] == response.request.headers["Origin"]
        assert response.headers["Access-Control-Expose-Headers"] == ", ".join(CORS_EXPOSE_HEADERS)
        assert "Access-Control-Allow-Credentials" not in response.headers  # tokens, never cookies
        assert "Origin" in response.headers["Vary"]
    assert (read.status_code, created.status_code, refused.status_code) == (200, 201, 401)
    # The headers a browser client needs are the ones exposed, and the answers do carry them.
    assert {"X-API-Version", "X-Request-ID", "ETag"} <= set(CORS_EXPOSE_HEADERS) & set(read.headers.keys())
    assert {"Location", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
        CORS_EXPOSE_HEADERS) & set(created.headers.keys())


def test_other_origins_and_pages_get_no_cors_grant(cors_app):
    client = cors_app.test_client()
    evil = {"Origin": "https://evil.example", "Access-Control-Request-Method": "DELETE"}

    preflight = client.options("/api/customers/", headers=evil)
    read = client.get("/api/customers/", headers={**bearer("admin"), "Origin": "https://evil.example"})
    subdomain = client.get("/api/customers/", headers={**bearer("admin"), "Origin": "https://x.app.isp.example"})
    page = client.get("/login", headers={"Origin": APP_ORIGIN})
    page_preflight = client.options("/login", headers=PREFLIGHT)

    for response in (preflight, read, subdomain, page, page_preflight):
        assert access_control(response) == {}, response.request.path
    assert read.status_code == 200 and "Origin" in read.headers["Vary"]  # caches must not reuse it for APP_ORIGIN


@pytest.mark.parametrize("origin", ["*", "https://app.isp.example/api", "app.isp.example", "ftp://files.example",
                                    "https://*.isp.example", "null", "https://app.isp.example:http"])
def test_cors_origins_must_be_exact(make_app, origin):
    with pytest.raises(ConfigError, match="CORS_ALLOWED_ORIGINS"):
        make_app(CORS_ALLOWED_ORIGINS=[origin])


def test_cors_origins_are_read_from_the_environment(tmp_path):
    env = {"CORS_ALLOWED_ORIGINS": " https://a.example , http://localhost:5173,,"}
    assert load_config(tmp_path, env)["CORS_ALLOWED_ORIGINS"] == ["https://a.example", "http://localhost:5173"]
    assert load_config(tmp_path, {})["CORS_ALLOWED_ORIGINS"] == []


# The security headers as the previous code set them (Talisman's after-request hook, then CORP/COOP), in their order.
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
          "connect-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors 'none'")
HARDENED = [("Cross-Origin-Resource-Policy", "same-origin"), ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Permissions-Policy", "browsing-topics=()"), ("X-Frame-Options", "DENY"),
            ("X-Content-Type-Options", "nosniff"), ("Content-Security-Policy", POLICY),
            ("Strict-Transport-Security", f"max-age={ONE_YEAR}; includeSubDomains"),
            ("Referrer-Policy", "strict-origin-when-cross-origin")]
SECURITY_HEADERS = {name for name, _ in HARDENED}


def security_headers(response) -> list[tuple[str, str]]:
    """The response's security headers, in the order it carries them."""
    return [(name, value) for name, value in response.headers.items() if name in SECURITY_HEADERS]


def expected(https: bool, form_action: str = "") -> list[tuple[str, str]]:
    """HARDENED as a response over plain HTTP (no HSTS) or HTTPS, its form-action widened by `form_action`."""
    return [(name, value.replace("form-action 'self'", f"form-action 'self' {form_action}") if form_action and
             name == "Content-Security-Policy" else value)
            for name, value in HARDENED if https or name != "Strict-Transport-Security"]


def talisman_reference(app, path: str, base_url: str, production: bool, own=(), **request_options) -> list:
    """What the previous code wrote for `path` onto a response carrying `own` headers: CORP/COOP unless set, then
    Talisman's own per-request hook (the code the precomputed headers replaced)."""
    from flask import Flask
    from flask_talisman import Talisman

    from isp_admin.security import talisman_options

    reference = Talisman(Flask("reference"), **talisman_options(production))
    with app.test_request_context(path, base_url=base_url, **request_options):
        response = app.response_class(headers=list(own))
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        return security_headers(reference._set_response_headers(response))  # noqa: SLF001  (the old code path)


def test_precomputed_headers_equal_talismans_for_a_page_an_api_answer_an_error_and_a_probe(production_app):
    client = production_app.test_client()
    https = "https://localhost"
    with production_app.app_context():
        token = bearer("admin", "read")

    answers = {"/login": client.get("/login", base_url=https),
               "/api/customers/": client.get("/api/customers/", base_url=https, headers=token),
               "/no/such/page": client.get("/no/such/page", base_url=https),
               "/health/": client.get("/health/", base_url=https)}

    assert [answer.status_code for answer in answers.values()] == [200, 200, 404, 200]
    for path, answer in answers.items():
        assert security_headers(answer) == expected(https=True), path
        assert security_headers(answer) == talisman_reference(production_app, path, https, production=True), path


def test_behind_a_tls_proxy_hsts_is_sent_and_plain_http_is_redirected_as_talisman_did(production_app):
    client = production_app.test_client()
    proxied = {"X-Forwarded-Proto": "https"}

    page = client.get("/login", headers=proxied)
    redirected = client.get("/login?next=/customers/")
    probe = client.get("/health/")  # probes speak plain HTTP to the pod: never redirected

    assert page.status_code == 200 and security_headers(page) == expected(https=True)
    assert security_headers(page) == talisman_reference(production_app, "/login", "http://localhost", True,
                                                        headers=proxied)
    assert redirected.status_code == 302
    assert redirected.headers["Location"] == "https://localhost/login?next=/customers/"
    assert probe.status_code == 200 and security_headers(probe) == expected(https=False)


def test_precomputed_headers_equal_talismans_over_plain_http_in_testing(app, client):
    page = client.get("/login")

    assert security_headers(page) == expected(https=False)
    assert security_headers(page) == talisman_reference(app, "/login", "http://localhost", production=False)


@pytest.fixture
def stripe_app(make_app):
    """An app offering Stripe (at an address nothing here calls: the pay page only names its hosted pages)."""
    from tests.payments.conftest import offer, stripe_config

    with clean_context(make_app(**stripe_config("http://127.0.0.1:9"))) as app:
        offer("stripe")
        yield app


def test_the_pay_page_widens_form_action_to_the_providers_hosted_page_only(stripe_app):
    from tests.portal.conftest import portal_customer, portal_sign_in

    customer, _account = portal_customer()
    client = stripe_app.test_client()
    portal_sign_in(client, customer.account_number)
    hosted = stripe_app.config["STRIPE_API_BASE"]  # the local Stripe serves its own Checkout pages

    pay = client.get("/portal/pay")
    other = client.get("/portal/")

    assert pay.status_code == 200 and security_headers(pay) == expected(https=False, form_action=hosted)
    assert other.status_code == 200 and security_headers(other) == expected(https=False)


def test_a_views_own_value_is_overwritten_and_per_view_options_are_kept_as_talisman_did(make_app):
    from flask import Response

    from isp_admin.extensions import talisman

    app = make_app()

    own = [("X-Frame-Options", "ALLOWALL"), ("Referrer-Policy", "unsafe-url")]

    @talisman(frame_options="SAMEORIGIN", content_security_policy={"default-src": "'self'"})
    def embeddable():
        return Response("ok", headers=own)

    app.add_url_rule("/embeddable", view_func=embeddable)
    with app.app_context():
        answer = app.test_client().get("/embeddable")

    assert security_headers(answer) == talisman_reference(app, "/embeddable", "http://localhost", False, own=own)
    assert dict(security_headers(answer)) == {**dict(expected(https=False)), "X-Frame-Options": "SAMEORIGIN",
                                              "Content-Security-Policy": "default-src 'self'"}
    assert answer.headers.getlist("X-Frame-Options") == ["SAMEORIGIN"]

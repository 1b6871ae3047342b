"""Every GET route scores A+ (≥ 100) by the HTTP Observatory's rules, computed from the production app's responses.

The scorer follows MDN's HTTP Observatory (https://developer.mozilla.org/en-US/observatory/docs/tests_and_scoring;
its code: github.com/mdn/mdn-http-observatory, points in src/grader/charts.js, rules in src/analyzer/tests/*.js):
start at 100, deduct every penalty; only if that leaves 90 or more are the bonuses added; 100+ is A+.

    test                    what we check here (points)
    content-security-policy no CSP -25; unparsable -25; 'unsafe-inline'/data:/broad sources in script-src, or
                            broad object-src -20; http: active sources -20; 'unsafe-eval' -10; http: images
                            -10; unsafe style-src 0; else +5, or +10 with default-src 'none' alone
    cookies                 none 0; session cookie (name has "sess"/"login") without Secure -40 (-10 under
                            HSTS), without HttpOnly -30; any cookie without Secure -20 (-5 under HSTS);
                            SameSite invalid -20; CSRF cookie without SameSite -20; all good 0, +5 with SameSite
    cors                    Access-Control-Allow-Origin echoing the Origin with credentials -50; else 0
    redirection             plain HTTP never reaching HTTPS -20; first hop to HTTP -10; off-host first hop -5
    referrer-policy         no-referrer/same-origin/strict-origin(-when-cross-origin) +5; none 0; unsafe -5
    strict-transport-security  none/invalid -20; max-age < 15552000 -10; else 0 (+5 only if on the preload
                            list, which no test host is)
    subresource-integrity   non-HTML or no scripts 0; same-origin scripts 0 (+5 with integrity=); external
                            scripts over HTTPS without SRI -5; over HTTP -50
    x-content-type-options  nosniff 0; else -5
    x-frame-options         frame-ancestors in the CSP +5; DENY/SAMEORIGIN/ALLOW-FROM 0; else -20
    cross-origin-resource-policy  same-origin/same-site +10; cross-origin or none 0; invalid -5

Per route, as the Observatory does per site: a plain-HTTP request followed through its redirects (redirection),
an HTTPS request (every header test; its body for SRI), and an HTTPS request carrying a foreign Origin (CORS);
cookies are every Set-Cookie seen on the way. Unlike the Observatory, a CSP in <meta> is not read (we send none)
and only one policy per header is parsed (we send one).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from werkzeug.test import TestResponse
from werkzeug.wrappers import Response

from isp_admin import create_app
from isp_admin.config import load_config
from isp_admin.extensions import db
from isp_admin.models import Nas, User
from isp_admin.services.identity.users import make_reset_token
from tests.api.helpers import bearer
from tests.conftest import RUN_ID
from tests.factories import PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory
from tests.web.billing_world import billing_records, document_records

HOST = "localhost"
# The Origin the Observatory's CORS probe sends.
FOREIGN_ORIGIN = "https://http-observatory.security.mozilla.org"
SIX_MONTHS = 15552000  # the Observatory's threshold (15768000 less a "white lie" for the common 180 days)
MINIMUM_SCORE_FOR_EXTRA_CREDIT = 90
REDIRECTS = (301, 302, 303, 307, 308)


@dataclass
class Scan:
    """The responses the Observatory looks at for one URL."""

    url: str
    response: Response  # the HTTPS answer ("auto" in the Observatory)
    http_route: list[str]  # the plain-HTTP URL and every URL it redirected to
    cors: TestResponse | None = None
    set_cookies: list[str] = field(default_factory=list)

    @property
    def headers(self):
        """Return the HTTPS answer's headers."""
        return self.response.headers


# --- CSP -------------------------------------------------------------------------------------------------------

BROAD = {"ftp:", "http:", "https:", "*", "http://*", "http://*.*", "https://*", "https://*.*"}
UNSAFE_INLINE = {"'unsafe-inline'", "data:"}
NONCE_OR_HASH = ("'sha256-", "'sha384-", "'sha512-", "'nonce-")


def parse_csp(header: str) -> dict[str, set[str]]:
    """Parse one policy as the Observatory does: directives lower-cased, a bare *-src means 'none'."""
    if "," in header:
        raise AssertionError("more than one policy: this scorer parses one")
    policy = header.replace("\r", "").replace("\n", "").strip()
    if len(policy) < len("img-src") - 1:
        raise ValueError("policy too short")
    directives: dict[str, set[str]] = {}
    for entry in policy.split(";"):
        name, *sources = entry.strip().split()
        name = name.lower() if name else name
        if not name:
            continue
        if name in directives and name not in ("report-uri", "report-to"):
            raise ValueError(f"duplicate directive {name}")
        directives[name] = {source.lower() for source in sources} or ({"'none'"} if name.endswith("-src") else set())
    return directives


def csp_test(scan: Scan) -> tuple[str, int]:
    """Score the Content-Security-Policy header."""
    header = scan.headers.get("Content-Security-Policy")
    if not header:
        return "csp-not-implemented", -25
    try:
        csp = parse_csp(header)
    except ValueError:
        return "csp-header-invalid", -25
    default = csp.get("default-src")
    script = set(csp.get("script-src") or default or {"*"})
    style = set(csp.get("style-src") or default or {"*"})
    objects = csp.get("object-src") or default or {"*"}
    for sources in (script, style):
        if any(s.startswith(NONCE_OR_HASH) for s in sources):
            sources.discard("'unsafe-inline'")  # ignored by browsers when a nonce or hash is present
    if "'strict-dynamic'" in script:
        if not any(s.startswith(NONCE_OR_HASH) for s in script):
            return "csp-header-invalid", -25
        script = {s for s in script if s not in ("'self'", "'unsafe-inline'") and not s.startswith(tuple(BROAD))}
    active = [s for name, sources in csp.items() if name not in ("img-src", "media-src", "script-src")
              for s in sources] + sorted(script)
    passive = [s for name in ("img-src", "media-src") for s in (csp.get(name) or default or set())]
    https = scan.url.startswith("https:")
    if script & (BROAD | UNSAFE_INLINE) or objects & BROAD:
        return "csp-implemented-with-unsafe-inline", -20
    if https and any(s.startswith(("http:", "ftp:")) for s in active):
        return "csp-implemented-with-insecure-scheme", -20
    if "'unsafe-eval'" in script | style:
        return "csp-implemented-with-unsafe-eval", -10
    if https and any(s.startswith(("http:", "ftp:")) for s in passive):
        return "csp-implemented-with-insecure-scheme-in-passive-content-only", -10
    if style & (BROAD | UNSAFE_INLINE):
        return "csp-implemented-with-unsafe-inline-in-style-src-only", 0
    if default == {"'none'"}:
        return "csp-implemented-with-no-unsafe-default-src-none", 10
    return "csp-implemented-with-no-unsafe", 5


# --- Cookies ---------------------------------------------------------------------------------------------------

# The Observatory keeps the worst finding; "worse" is the later place in this list.
COOKIE_FINDINGS = [
    ("cookies-without-secure-flag-but-protected-by-hsts", -5),
    ("cookies-without-secure-flag", -20),
    ("cookies-session-without-secure-flag-but-protected-by-hsts", -10),
    ("cookies-samesite-flag-invalid", -20),
    ("cookies-anticsrf-without-samesite-flag", -20),
    ("cookies-session-without-httponly-flag", -30),
    ("cookies-session-without-secure-flag", -40),
]


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """Return a Set-Cookie header's name, value and attributes (names lower-cased; flags map to "")."""
    pair, *parts = header.split(";")
    name, _, value = pair.strip().partition("=")
    attributes = {}
    for part in parts:
        key, _, attribute = part.strip().partition("=")
        attributes[key.strip().lower()] = attribute.strip()
    return name, value, attributes


def is_deletion(attributes: dict[str, str]) -> bool:
    """Whether a Set-Cookie removes the cookie (a cookie jar stores nothing for it)."""
    return attributes.get("max-age") == "0" or "1970" in attributes.get("expires", "")


def cookies_test(scan: Scan) -> tuple[str, int]:
    """Score every cookie the scan was given."""
    hsts = hsts_test(scan)[1] == 0
    findings = []
    stored = 0
    missing_same_site = False
    for header in scan.set_cookies:
        name, _, attributes = parse_set_cookie(header)
        same_site = attributes.get("samesite")
        if same_site is not None and same_site.lower() not in ("lax", "strict", "none"):
            findings.append("cookies-samesite-flag-invalid")
        if is_deletion(attributes):
            continue
        stored += 1
        key = name.lower()
        session, anti_csrf = "login" in key or "sess" in key, "csrf" in key
        secure, http_only = "secure" in attributes, "httponly" in attributes
        if not secure and (same_site or "").lower() == "none":
            findings.append("cookies-samesite-flag-invalid")
        if not secure:
            findings.append("cookies-without-secure-flag-but-protected-by-hsts" if hsts
                            else "cookies-without-secure-flag")
        if anti_csrf and not same_site:
            findings.append("cookies-anticsrf-without-samesite-flag")
        if session and not secure:
            findings.append("cookies-session-without-secure-flag-but-protected-by-hsts" if hsts
                            else "cookies-session-without-secure-flag")
        if session and not http_only:
            findings.append("cookies-session-without-httponly-flag")
        missing_same_site = missing_same_site or not same_site
    if findings:
        order = [name for name, _ in COOKIE_FINDINGS]
        return COOKIE_FINDINGS[max(order.index(finding) for finding in findings)]
    if not stored:
        return "cookies-not-found", 0
    if missing_same_site:
        return "cookies-secure-with-httponly-sessions", 0
    return "cookies-secure-with-httponly-sessions-and-samesite", 5


# --- The other tests -------------------------------------------------------------------------------------------


def cors_test(scan: Scan) -> tuple[str, int]:
    """Score what a foreign Origin is allowed to read."""
    response = scan.cors
    allowed = response.headers.get("Access-Control-Allow-Origin") if response is not None else None
    if not allowed:
        return "cross-origin-resource-sharing-not-implemented", 0
    if allowed.strip() == "*":
        return "cross-origin-resource-sharing-implemented-with-public-access", 0
    origin = response.request.headers.get("Origin")
    if allowed == origin and response.headers.get("Access-Control-Allow-Credentials", "").lower() == "true":
        return "cross-origin-resource-sharing-implemented-with-universal-access", -50
    return "cross-origin-resource-sharing-implemented-with-restricted-access", 0


def redirection_test(scan: Scan) -> tuple[str, int]:
    """Score where plain HTTP leads."""
    route = [urlsplit(url) for url in scan.http_route]
    if len(route) == 1:
        return "redirection-missing", -20
    if route[-1].scheme != "https":
        return "redirection-not-to-https", -20
    if route[1].scheme == "http":
        return "redirection-not-to-https-on-initial-redirection", -10
    if route[0].hostname != route[1].hostname:
        return "redirection-off-host-from-http", -5
    return "redirection-to-https", 0


def referrer_policy_test(scan: Scan) -> tuple[str, int]:
    """Score the Referrer-Policy header (the last valid value counts)."""
    good = ("no-referrer", "same-origin", "strict-origin", "strict-origin-when-cross-origin")
    bad = ("origin", "origin-when-cross-origin", "unsafe-url", "no-referrer-when-downgrade")
    header = scan.headers.get("Referrer-Policy")
    if header is None:
        return "referrer-policy-not-implemented", 0
    valid = [value.strip().lower() for value in header.split(",") if value.strip().lower() in good + bad]
    if valid and valid[-1] in good:
        return "referrer-policy-private", 5
    if valid:
        return "referrer-policy-unsafe", -5
    return "referrer-policy-header-invalid", -5


def hsts_test(scan: Scan) -> tuple[str, int]:
    """Score Strict-Transport-Security on the HTTPS answer."""
    if not scan.url.startswith("https:"):
        return "hsts-not-implemented-no-https", -20
    header = scan.headers.get("Strict-Transport-Security")
    if header is None:
        return "hsts-not-implemented", -20
    max_age = re.search(r"(?:^|;)\s*max-age=(\d+)", header.lower())
    if "," in header or not max_age:
        return "hsts-header-invalid", -20
    if int(max_age.group(1)) < SIX_MONTHS:
        return "hsts-implemented-max-age-less-than-six-months", -10
    return "hsts-implemented-max-age-at-least-six-months", 0


class ScriptFinder(HTMLParser):
    """Collect the src and integrity of every <script>."""

    def __init__(self):
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts.append(dict(attrs))


def sri_test(scan: Scan) -> tuple[str, int]:
    """Score Subresource Integrity on an HTML answer's scripts."""
    if scan.response.mimetype not in ("text/html", "application/xhtml+xml"):
        return "sri-not-implemented-response-not-html", 0
    finder = ScriptFinder()
    finder.feed(scan.response.get_data(as_text=True))
    if not finder.scripts:
        return "sri-not-implemented-but-no-scripts-loaded", 0
    penalties = []
    bonus = False
    for script in finder.scripts:
        src = script.get("src")
        if not src:
            continue
        integrity = script.get("integrity")
        if src.startswith("//"):
            penalties.append(("sri-not-implemented-and-external-scripts-not-loaded-securely", -50))
        elif re.match(r"https?://", src) and urlsplit(src).hostname != HOST:
            secure = src.startswith("https://")
            if integrity and not secure:
                penalties.append(("sri-implemented-but-external-scripts-not-loaded-securely", -20))
            elif not integrity:
                penalties.append(("sri-not-implemented-but-external-scripts-loaded-securely", -5) if secure
                                 else ("sri-not-implemented-and-external-scripts-not-loaded-securely", -50))
        elif integrity and scan.url.startswith("https:"):
            bonus = True
    if penalties:
        return min(penalties, key=lambda result: result[1])
    if bonus:
        return "sri-implemented-and-all-scripts-loaded-securely", 5
    return "sri-not-implemented-but-all-scripts-loaded-from-secure-origin", 0


def x_content_type_options_test(scan: Scan) -> tuple[str, int]:
    """Score X-Content-Type-Options."""
    header = scan.headers.get("X-Content-Type-Options")
    if header is None:
        return "x-content-type-options-not-implemented", -5
    if header.strip().lower() == "nosniff":
        return "x-content-type-options-nosniff", 0
    return "x-content-type-options-header-invalid", -5


def x_frame_options_test(scan: Scan) -> tuple[str, int]:
    """Score framing protection: CSP frame-ancestors beats X-Frame-Options."""
    try:
        if "frame-ancestors" in parse_csp(scan.headers.get("Content-Security-Policy") or ""):
            return "x-frame-options-implemented-via-csp", 5
    except ValueError:
        pass
    header = (scan.headers.get("X-Frame-Options") or "").strip().lower()
    if header in ("deny", "sameorigin"):
        return "x-frame-options-sameorigin-or-deny", 0
    if header.startswith("allow-from"):
        return "x-frame-options-allow-from-origin", 0
    return ("x-frame-options-header-invalid", -20) if header else ("x-frame-options-not-implemented", -20)


def corp_test(scan: Scan) -> tuple[str, int]:
    """Score Cross-Origin-Resource-Policy."""
    header = scan.headers.get("Cross-Origin-Resource-Policy")
    if header is None:
        return "corp-not-implemented", 0
    results = {"same-origin": ("corp-implemented-with-same-origin", 10),
               "same-site": ("corp-implemented-with-same-site", 10),
               "cross-origin": ("corp-implemented-with-cross-origin", 0)}
    return results.get(header.strip().lower(), ("corp-header-invalid", -5))


TESTS = (csp_test, cookies_test, cors_test, redirection_test, referrer_policy_test, hsts_test, sri_test,
         x_content_type_options_test, x_frame_options_test, corp_test)


def observatory_score(scan: Scan, skip: tuple[str, ...] = ()) -> tuple[int, dict[str, tuple[str, int]]]:
    """Return the scan's score and each test's result; tests named in `skip` are left out."""
    results = {test.__name__: test(scan) for test in TESTS if test.__name__ not in skip}
    modifiers = [modifier for _, modifier in results.values()]
    uncurved = 100 + sum(m for m in modifiers if m < 0)
    score = 100 + sum(modifiers) if uncurved >= MINIMUM_SCORE_FOR_EXTRA_CREDIT else uncurved
    return max(score, 0), results


def grade(score: int) -> str:
    """Return the Observatory's letter grade."""
    chart = [(100, "A+"), (90, "A"), (85, "A-"), (80, "B+"), (70, "B"), (65, "B-"), (60, "C+"), (50, "C"),
             (45, "C-"), (40, "D+"), (30, "D"), (25, "D-"), (0, "F")]
    return next(letter for floor, letter in chart if score >= floor)


# --- Scanning the app ------------------------------------------------------------------------------------------


def fetch(client, url: str, headers: dict[str, str]):
    """GET `url` and read the whole body (which closes a streamed file)."""
    response = client.get(url, headers=headers)
    response.get_data()
    response.close()
    return response


def scan_route(client, path: str, headers: dict[str, str] | None = None, origin: str = FOREIGN_ORIGIN) -> Scan:
    """Request `path` as the Observatory would: over plain HTTP (following redirects), HTTPS, and CORS."""
    headers = headers or {}
    set_cookies: list[str] = []
    route = [f"http://{HOST}{path}"]
    answer = fetch(client, route[0], headers)
    while answer.status_code in REDIRECTS and len(route) < 10:
        set_cookies += answer.headers.getlist("Set-Cookie")
        route.append(urljoin(route[-1], answer.headers["Location"]))
        answer = fetch(client, route[-1], headers)
    set_cookies += answer.headers.getlist("Set-Cookie")
    url = f"https://{HOST}{path}"
    response = fetch(client, url, headers)
    cors = fetch(client, url, {**headers, "Origin": origin})
    set_cookies += response.headers.getlist("Set-Cookie") + cors.headers.getlist("Set-Cookie")
    return Scan(url, response, route, cors, set_cookies)


def csrf_token(html: str) -> str:
    """Return the CSRF token of a rendered form."""
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)


def production_config(backends, instance, **env) -> dict:
    """Build the config a production deployment reads from its environment."""
    base = {
        "APP_ENV": "production", "PUBLIC_URL": "https://isp.example.com",
        "SECRET_KEY": "observatory-test-secret-not-for-deployment-0123456789",
        "DATABASE_URL": backends["database_url"],
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
        "CACHE_KEY_PREFIX": f"test:{RUN_ID}:observatory:",
        "RATELIMIT_KEY_PREFIX": f"test-rl:{RUN_ID}:observatory",
        # The limiter stays on (its headers are part of the answers) with room for a scan of every route.
        "RATE_LIMIT_AUTHENTICATED": "10000/minute",
        "RATE_LIMIT_ANONYMOUS": "10000/minute",
        "RATE_LIMIT_LOGIN": "1000/minute",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    if backends["redis_url"]:
        base["REDIS_URL"] = backends["redis_url"]
    return load_config(instance, base)


@pytest.fixture
def production(app, backends, tmp_path):
    """The app as production builds it (CSRF, rate limits, HTTPS redirects), on the test database."""
    production = create_app(production_config(backends, tmp_path / "production"))
    assert production.config["PRODUCTION"] and production.config["WTF_CSRF_ENABLED"]
    yield production
    with production.app_context():
        db.session.remove()
        db.engine.dispose()


def sign_in(client, user):
    """Sign in through the login form over HTTPS, CSRF token and all; return the sign-in response."""
    form = client.get(f"https://{HOST}/login")
    # Over HTTPS, Flask-WTF also wants a same-origin Referer, as a browser sends.
    response = client.post(f"https://{HOST}/login", headers={"Referer": f"https://{HOST}/login"},
                           data={"email": user.email, "password": PASSWORD, "remember": "y",
                                 "csrf_token": csrf_token(form.text)})
    assert response.status_code == 302, response.text[:300]
    return response


@pytest.fixture
def route_args(app, production):
    """Real records for every URL argument of the app's routes."""
    PlanFactory(active=False)
    customer = CustomerFactory(name="Jane Wairimu")
    subscription = SubscriptionFactory(customer=customer, pppoe_username="jane-home", static_ip="203.0.113.7")
    staff = UserFactory(role="support")
    billing = billing_records(customer.id)
    router = Nas(nasname="192.0.2.1", shortname="bras-1", type="mikrotik", secret="router-secret")
    db.session.add(router)
    db.session.commit()
    with production.app_context():  # signed with production's secret, which is not the testing app's
        token = make_reset_token(db.session.get(User, staff.id))
    return {"customer_id": customer.id, "subscription_id": subscription.id, "plan_id": subscription.plan_id,
            "user_id": staff.id, "token": token, "invoice_id": billing["invoice"], "draft_id": billing["draft"],
            "payment_id": billing["payment"], "job_run_id": billing["job_run"], "job_id": billing["job_run"],
            "nas_id": router.id, **document_records(customer.id)}


def plain_http_by_design(app, endpoint: str) -> bool:
    """Whether a view opts out of the HTTPS redirect (Talisman's per-view force_https=False)."""
    return getattr(app.view_functions[endpoint], "talisman_view_options", {}).get("force_https") is False


STATIC_FILES = {"static": "css/app.css", "bootstrap.static": "css/bootstrap.min.css"}
ANONYMOUS = ("auth.login", "auth.forgot_password", "auth.reset_password", "static", "bootstrap.static")


def get_routes(app, route_args):
    """Yield (rule, path) for every GET route of `app`, its URL filled with real records."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if "GET" not in rule.methods or rule.endpoint.startswith("portal."):
            continue  # the subscribers' pages need a customer's sign-in, not staff's: scanned in tests/portal/
        if rule.endpoint.startswith("dev.") and app.config.get("PRODUCTION"):
            continue  # development pages answer 404 in production (tests/web/test_dev_mail.py)
        args = {name: route_args.get(name, STATIC_FILES.get(rule.endpoint)) for name in rule.arguments}
        if rule.endpoint == "invoices.edit_draft":
            args["invoice_id"] = route_args["draft_id"]  # only a draft can be edited; only an issued one printed
        yield rule, rule.build(args)[1]


def score_route(app, rule, scan: Scan) -> tuple[int, dict, str]:
    """Score one route's scan; a view that answers plain HTTP by design is scored without the redirection test."""
    score, results = observatory_score(scan)
    if not plain_http_by_design(app, rule.endpoint):
        return score, results, ""
    # Health probes and /metrics answer plain HTTP on purpose (probes and Prometheus reach the container without
    # TLS, and a redirect would fail them): the one test they fail is the redirection; the rest must give A+.
    assert results["redirection_test"][0] == "redirection-missing", (rule.rule, results)
    score, results = observatory_score(scan, skip=("redirection_test",))
    return score, results, " (plain HTTP by design: redirection not scored)"


def test_every_get_route_scores_a_plus_in_production(app, production, route_args):
    token = bearer("admin", "read,write,billing,health")
    staff, anonymous = production.test_client(), production.test_client()
    sign_in(staff, UserFactory(role="admin"))

    table = []
    for rule, path in get_routes(production, route_args):
        api, static = rule.rule.startswith("/api/"), rule.endpoint in ("static", "bootstrap.static")
        client = staff if not api and rule.endpoint not in ANONYMOUS else anonymous
        scan = scan_route(client, path, token if api else None)
        assert scan.response.status_code == 200, (path, scan.response.status_code, scan.response.text[:300])
        score, results, note = score_route(production, rule, scan)
        table.append((path + note, score, results))

        # Caching: a signed-in user's answers are never stored; API data is revalidated by ETag; files are shared.
        cache_control = scan.headers.get("Cache-Control")
        if static:
            assert cache_control == "no-cache", path
        elif api and "ETag" in scan.headers:
            assert cache_control == "private, no-cache", path
        elif client is staff:
            assert cache_control == "no-store", path

    print("\nHTTP Observatory score per GET route (production config); non-zero modifiers")
    for path, score, results in table:
        modifiers = " ".join(f"{name.removesuffix('_test')}{modifier:+d}" for name, (_, modifier) in results.items()
                             if modifier)
        print(f"  {score:4d} {grade(score):2s} {path}  {modifiers}")
    assert {path: (score, results) for path, score, results in table if score < 100} == {}
    assert len(table) >= 55  # the panel, the API and its docs, health, metrics and static files


def test_api_routes_keep_a_plus_with_cors_enabled(app, backends, tmp_path, route_args):
    origin = "https://app.isp.example"
    cors = create_app(production_config(backends, tmp_path / "cors", CORS_ALLOWED_ORIGINS=origin))
    client, token = cors.test_client(), bearer("admin", "read,billing")

    scores = {}
    try:
        for rule, path in get_routes(cors, route_args):
            if rule.rule.startswith("/api/"):
                scan = scan_route(client, path, token, origin=origin)
                assert scan.cors.headers["Access-Control-Allow-Origin"] == origin
                score, results, _ = score_route(cors, rule, scan)
                assert results["cors_test"] == ("cross-origin-resource-sharing-implemented-with-restricted-access", 0)
                scores[path] = score
    finally:
        with cors.app_context():
            db.session.remove()
            db.engine.dispose()

    assert len(scores) >= 15 and min(scores.values()) >= 100, scores


def test_sign_in_and_sign_out_cookies_score_full_marks(app, production):
    client = production.test_client()
    user = UserFactory(role="admin")

    form = client.get(f"https://{HOST}/login")
    signed_in = sign_in(client, user)
    dashboard = client.get(f"https://{HOST}/")
    signed_out = client.post(f"https://{HOST}/logout", headers={"Referer": f"https://{HOST}/"},
                             data={"csrf_token": csrf_token(dashboard.text)})

    assert signed_out.status_code == 302
    for step, response in {"login form": form, "sign-in": signed_in, "sign-out": signed_out}.items():
        scan = Scan(f"https://{HOST}/login", response, [], set_cookies=response.headers.getlist("Set-Cookie"))
        assert cookies_test(scan) == ("cookies-secure-with-httponly-sessions-and-samesite", 5), step


def scan_of(headers: dict[str, str], body: str = "", mimetype: str = "text/html",
            http_route: tuple[str, ...] = ("http://localhost/", "https://localhost/")) -> Scan:
    """Build a scan from made-up headers, to check the scorer itself."""
    response = Response(body, headers=headers, mimetype=mimetype)
    return Scan("https://localhost/", response, list(http_route),
                set_cookies=[v for k, v in headers.items() if k == "Set-Cookie"])


GOOD = {"Content-Security-Policy": "default-src 'self'; object-src 'none'; frame-ancestors 'none'",
        "Strict-Transport-Security": "max-age=31536000", "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


@pytest.mark.parametrize(("headers", "expected"), [
    # Nothing at all: -25 CSP, -20 HSTS, -5 nosniff, -20 framing = 30 (D).
    ({}, 30),
    # A sound policy: +5 CSP, +5 frame-ancestors, +5 Referrer-Policy.
    (GOOD, 115),
    (GOOD | {"Cross-Origin-Resource-Policy": "same-origin"}, 125),
    (GOOD | {"Content-Security-Policy": "default-src 'none'; script-src 'self'; frame-ancestors 'none'"}, 120),
    # 'unsafe-inline' scripts: -20 takes the score below 90, so the bonuses are lost (80).
    (GOOD | {"Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline'"}, 80),
    (GOOD | {"Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'"}, 105),
    # -10 for 'unsafe-eval' leaves 90, so the bonuses count (without frame-ancestors, only the referrer's).
    (GOOD | {"Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-eval'"}, 95),
    (GOOD | {"Content-Security-Policy": "default-src https:"}, 80),
    (GOOD | {"Strict-Transport-Security": "max-age=86400"}, 105),
    (GOOD | {"Referrer-Policy": "unsafe-url"}, 105),
    (GOOD | {"Cross-Origin-Resource-Policy": "nonsense"}, 110),
])
def test_the_scorer_follows_the_observatory_modifiers(headers, expected):
    assert observatory_score(scan_of(headers))[0] == expected


@pytest.mark.parametrize(("set_cookie", "expected"), [
    ("session=x; Secure; HttpOnly; SameSite=Lax; Path=/", ("cookies-secure-with-httponly-sessions-and-samesite", 5)),
    ("session=x; Secure; HttpOnly; Path=/", ("cookies-secure-with-httponly-sessions", 0)),
    ("session=x; HttpOnly; SameSite=Lax", ("cookies-session-without-secure-flag-but-protected-by-hsts", -10)),
    ("session=x; Secure; SameSite=Lax", ("cookies-session-without-httponly-flag", -30)),
    ("theme=dark; SameSite=Lax", ("cookies-without-secure-flag-but-protected-by-hsts", -5)),
    ("csrftoken=x; Secure", ("cookies-anticsrf-without-samesite-flag", -20)),
    ("theme=dark; Secure; SameSite=Sometimes", ("cookies-samesite-flag-invalid", -20)),
    ("session=; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/", ("cookies-not-found", 0)),
])
def test_the_cookie_rules(set_cookie, expected):
    assert cookies_test(scan_of(GOOD | {"Set-Cookie": set_cookie})) == expected


def test_the_redirection_sri_and_cors_rules():
    assert redirection_test(scan_of(GOOD, http_route=("http://localhost/",))) == ("redirection-missing", -20)
    assert redirection_test(scan_of(GOOD, http_route=("http://localhost/", "https://www.localhost/")))[1] == -5
    assert sri_test(scan_of(GOOD, '<script src="/static/js/app.js"></script>'))[1] == 0
    assert sri_test(scan_of(GOOD, '<script src="https://cdn.example/x.js"></script>'))[1] == -5
    assert sri_test(scan_of(GOOD, '<script src="http://cdn.example/x.js"></script>'))[1] == -50
    assert sri_test(scan_of(GOOD, '<script src="/a.js" integrity="sha384-x"></script>'))[1] == 5
    assert sri_test(scan_of(GOOD, "{}", mimetype="application/json"))[1] == 0

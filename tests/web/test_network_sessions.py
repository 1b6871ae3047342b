"""The network card of a subscription, the customer page's online badges and the "Online now" page: what the real
FreeRADIUS records is what staff see; the PPPoE password is shown once and nowhere else; hostile input is a 4xx."""
from __future__ import annotations

import html
import logging
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CoaRequest, Nas, NetworkCredential, RadAcct
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

GB = 10**9
_counter = iter(range(1, 10**6))


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def network_card(response) -> str:
    page = text_of(response)
    return page[page.index('id="network"'):page.index(">History<")]


def accounting(username: str, *, minutes_ago: int = 5, stopped: bool = False, received: int = 0, sent: int = 0,
               ip: str | None = None, nas: str = "192.0.2.1") -> int:
    n = next(_counter)
    started = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    row = RadAcct(acctsessionid=f"W{n}", acctuniqueid=f"w{n}", username=username, nasipaddress=nas,
                  framedipaddress=ip, acctstarttime=started, acctstoptime=started + timedelta(minutes=1) if stopped
                  else None, acctinputoctets=sent, acctoutputoctets=received)
    db.session.add(row)
    db.session.commit()
    return row.radacctid


def actions(action: str) -> list[AuditEvent]:
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


@pytest.fixture
def plan():
    return PlanFactory(code="HOME50", name="Home 50", download_mbps=50, upload_mbps=10, data_cap_gb=10)


@pytest.fixture
def customer():
    return CustomerFactory(name="Wanjiru Kamau")


@pytest.fixture
def sub(plan, customer):
    """An active subscription on a 10 GB-capped plan, login "wanjiru", started this year."""
    sub = SubscriptionFactory(customer=customer, plan=plan, pppoe_username="wanjiru", static_ip="100.64.0.7",
                              start_date=date(2026, 1, 1), billing_day=1)
    db.session.add(Nas(nasname="192.0.2.1", shortname="bras-1", secret="router-secret"))
    db.session.commit()
    return sub


# --- real accounting on the page and in the API ------------------------------------------------------------------

def test_freeradius_accounting_shows_as_a_session_and_usage_on_the_page_and_in_the_api(client, login, sub,
                                                                                        freeradius):
    from tests.api.helpers import bearer

    login("readonly")
    before = network_card(client.get(f"/subscriptions/{sub.id}"))
    assert "offline" in before and "No sessions yet" in before and "Reject (no password set)" in before

    nas = freeradius.client()
    nas.account("Start", "wanjiru", "R1", framed_ip="100.64.0.7")
    nas.account("Interim-Update", "wanjiru", "R1", framed_ip="100.64.0.7", input_octets=250_000_000,
                output_octets=3 * GB, session_time=1800)
    card = network_card(client.get(f"/subscriptions/{sub.id}"))
    assert "online" in card and "offline" not in card
    assert re.search(r"<code>127\.0\.0\.1</code>\s*</td>\s*<td><code>100\.64\.0\.7</code>", card)
    assert "3.0 GB" in card and "250.0 MB" in card  # download, upload
    assert "3.2 GB</strong>" in card and "10 GB</strong> cap" in card and ">32.5%<" in card
    assert "/disconnect" not in card  # readonly may not

    headers = bearer("readonly", "read")
    data = client.get(f"/api/subscriptions/{sub.id}/sessions/", headers=headers).get_json()["data"]
    assert (data["online"], data["open_sessions"], len(data["sessions"])) == (True, 1, 1)
    assert (data["sessions"][0]["input_octets"], data["sessions"][0]["output_octets"]) == (250_000_000, 3 * GB)
    usage = client.get(f"/api/subscriptions/{sub.id}/usage/", headers=headers).get_json()["data"]
    assert (usage[0]["total_octets"], usage[0]["data_cap_gb"], usage[0]["percent_of_cap"]) == (3_250_000_000, 10, 32.5)

    nas.account("Stop", "wanjiru", "R1", framed_ip="100.64.0.7", input_octets=300_000_000, output_octets=4 * GB,
                session_time=2400)
    card = network_card(client.get(f"/subscriptions/{sub.id}"))
    assert "offline" in card and "40m" in card and "4.3 GB</strong>" in card
    assert 'id="no-open-sessions"' in card
    customer_page = text_of(client.get(f"/customers/{sub.customer_id}"))
    assert f'/subscriptions/{sub.id}#network" class="text-decoration-none"><span class="badge text-bg-secondary">' \
           "offline" in customer_page


def test_the_customer_page_badges_each_subscription(client, login, sub, customer, plan):
    other = SubscriptionFactory(customer=customer, plan=plan, pppoe_username="second", static_ip=None)
    accounting("second")
    login("readonly")
    page = text_of(client.get(f"/customers/{sub.customer_id}"))
    badges = re.findall(r'/subscriptions/(\d+)#network" class="text-decoration-none"><span class="badge [^"]+">(\w+)',
                        page)
    assert badges == [(str(sub.id), "offline"), (str(other.id), "online")]


# --- actions -------------------------------------------------------------------------------------------------------

def test_support_disconnects_an_open_session_from_the_card(client, login, sub):
    session_id = accounting("wanjiru", ip="100.64.0.7")
    login("support")
    card = network_card(client.get(f"/subscriptions/{sub.id}"))
    assert f"/network/sessions/{session_id}/disconnect" in card
    response = client.post(f"/network/sessions/{session_id}/disconnect")
    assert response.status_code == 302 and response.headers["Location"].endswith(f"/subscriptions/{sub.id}#network")
    [request] = db.session.scalars(select(CoaRequest))
    assert (request.kind, request.acct_unique_id, request.subscription_id, request.status) == (
        "disconnect", db.session.get(RadAcct, session_id).acctuniqueid, sub.id, "pending")
    assert len(actions("session.disconnect")) == 1
    card = network_card(client.get(f"/subscriptions/{sub.id}"))
    assert 'id="subscription-coa"' in card and "manual" in card and "pending" in card


def test_resend_queues_the_plans_coa_for_each_open_session_and_refuses_without_one(client, login, sub):
    login("admin")
    response = client.post(f"/subscriptions/{sub.id}/coa-resend", follow_redirects=True)
    assert "no open session" in text_of(response) and db.session.scalar(select(func.count(CoaRequest.id))) == 0
    accounting("wanjiru")
    accounting("wanjiru", minutes_ago=2)
    response = client.post(f"/subscriptions/{sub.id}/coa-resend")
    assert response.status_code == 302
    requests = list(db.session.scalars(select(CoaRequest)))
    assert [(r.kind, r.reason) for r in requests] == [("coa", "resend"), ("coa", "resend")]
    assert '"Mikrotik-Rate-Limit": "10M/50M"' in requests[0].attributes
    assert len(actions("subscription.coa_resend")) == 1


def test_the_password_is_shown_once_and_nowhere_else(app, client, login, sub, caplog, capfd):
    from tests.api.helpers import bearer

    caplog.set_level(logging.DEBUG)
    login("support")
    card = network_card(client.get(f"/subscriptions/{sub.id}"))
    assert "Not set" in card and "Generate password" in card

    response = client.post(f"/subscriptions/{sub.id}/credentials")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    shown = re.search(r'<code class="fs-5" id="new-password">(\w+)</code>', text_of(response)).group(1)
    assert db.session.get(NetworkCredential, sub.id).password == shown
    assert "Accept: plan-HOME50" in network_card(response)

    again = client.post(f"/subscriptions/{sub.id}/credentials")
    regenerated = re.search(r'id="new-password">(\w+)<', text_of(again)).group(1)
    assert regenerated != shown and db.session.get(NetworkCredential, sub.id).password == regenerated
    assert len(actions("subscription.credentials_set")) == len(actions("subscription.credentials_regenerated")) == 1

    later = text_of(client.get(f"/subscriptions/{sub.id}"))
    assert "Set on" in later and "Regenerate password" in later and 'id="new-password"' not in later
    cookie = client.get_cookie("session").value
    stored = app.session_interface.staff.get_signing_serializer(app).loads(cookie)
    headers = bearer("admin", "read")
    api = "".join(client.get(url, headers=headers).get_data(as_text=True) for url in (
        f"/api/subscriptions/{sub.id}/", f"/api/subscriptions/{sub.id}/sessions/",
        f"/api/subscriptions/{sub.id}/usage/"))
    audit = repr([(e.before, e.after) for e in db.session.scalars(select(AuditEvent))])
    logs = "\n".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records) + "".join(capfd.readouterr())
    for password in (shown, regenerated):
        assert password not in later and password not in repr(stored) and password not in api
        assert password not in audit and password not in logs


def test_a_cancelled_subscription_offers_no_password(client, login, sub):
    sub.status, sub.end_date = "cancelled", date(2026, 3, 1)
    db.session.commit()
    login("admin")
    card = network_card(client.get(f"/subscriptions/{sub.id}"))
    assert "Reject (cancelled)" in card and "Generate password" not in card
    response = client.post(f"/subscriptions/{sub.id}/credentials", follow_redirects=True)
    assert "cancelled subscription has no network login" in text_of(response)
    assert db.session.get(NetworkCredential, sub.id) is None


# --- the online list ---------------------------------------------------------------------------------------------

def test_online_now_lists_open_sessions_linked_or_flagged_and_searches(client, login, sub):
    accounting("wanjiru", ip="100.64.0.7", received=2 * GB)
    accounting("stranger", ip="100.64.9.9")
    accounting("wanjiru", stopped=True, minutes_ago=300)
    login("readonly")
    page = text_of(client.get("/network/sessions"))
    assert '<a class="nav-link active" href="/network/sessions">Online now</a>' in page
    assert "2</strong> open sessions" in page
    assert f'/subscriptions/{sub.id}#network">wanjiru</a>' in page and "Wanjiru Kamau" in page
    assert re.search(r"stranger <span class=\"badge text-bg-warning\">unknown login</span>", page)
    found = text_of(client.get("/network/sessions?q=100.64.9.9"))
    assert "stranger" in found and "wanjiru" not in found
    assert "No match" in text_of(client.get("/network/sessions?q=nobody"))
    client.post("/logout")
    login("support")
    assert text_of(client.get("/network/sessions")).count("/disconnect") == 2


def test_online_now_is_empty_politely(client, login):
    login("readonly")
    assert "Nobody is online" in text_of(client.get("/network/sessions"))


@pytest.mark.parametrize("query", ["?after=" + "A" * 20000, "?before=not-a-cursor", "?after=WzEsIDFd" * 2,
                                   "?q=" + "x" * 500])
def test_hostile_queries_are_a_4xx_page(client, login, query):
    login("readonly")
    response = client.get("/network/sessions" + query)
    assert 400 <= response.status_code < 500 and response.mimetype == "text/html"


@pytest.mark.parametrize("query", ["?page=" + "9" * 21, "?size=" + "9" * 21, "?q=caf%C3%A9"])
def test_odd_but_harmless_queries_are_a_clean_page(client, login, query):
    login("readonly")
    assert client.get("/network/sessions" + query).status_code == 200


def test_a_nul_in_the_search_is_the_400_page(client, login):
    login("readonly")
    assert client.get("/network/sessions?q=a%00b").status_code == 400


def test_ids_that_do_not_exist_are_404(client, login, sub):
    login("admin")
    for method, url in (("GET", "/subscriptions/999999"), ("POST", "/subscriptions/999999/credentials"),
                        ("POST", "/subscriptions/999999/coa-resend"), ("POST", "/network/sessions/999999/disconnect"),
                        ("POST", f"/network/sessions/{10**20}/disconnect")):
        assert client.open(url, method=method).status_code == 404, url
    assert db.session.scalar(select(func.count(CoaRequest.id))) == 0


# --- constant statements -------------------------------------------------------------------------------------------

def statements_of(app, client, query_counter, url: str) -> int:
    assert client.get(url).status_code == 200  # warm caches
    with app.app_context(), query_counter() as statements:
        assert client.get(url).status_code == 200
    return len(statements)


def test_the_subscription_page_runs_the_same_statements_for_one_or_many_sessions(app, client, login, sub, customer,
                                                                                 plan, query_counter):
    other = SubscriptionFactory(customer=customer, plan=plan, pppoe_username="busy", static_ip=None,
                                start_date=date(2026, 1, 1))
    login("admin")
    accounting("wanjiru")
    for i in range(40):
        accounting("busy", minutes_ago=i * 30, stopped=i > 3, received=i * GB)
    db.session.add_all(CoaRequest(subscription_id=other.id, nas_address="192.0.2.1", kind="disconnect",
                                  reason="rejected", status="failed") for _ in range(15))
    db.session.commit()
    one = statements_of(app, client, query_counter, f"/subscriptions/{sub.id}")
    many = statements_of(app, client, query_counter, f"/subscriptions/{other.id}")
    assert one == many, (one, many)
    assert text_of(client.get(f"/subscriptions/{other.id}")).count("/disconnect") == 4


def test_the_online_page_runs_the_same_statements_for_few_or_many_sessions(app, client, login, query_counter):
    login("readonly")
    accounting("solo")
    few = statements_of(app, client, query_counter, "/network/sessions")
    for i in range(60):
        SubscriptionFactory(pppoe_username=f"crowd{i}")
        accounting(f"crowd{i}", minutes_ago=i)
    many = statements_of(app, client, query_counter, "/network/sessions")
    assert few == many, (few, many)
    assert statements_of(app, client, query_counter, "/network/sessions?q=crowd1") == few


def test_the_card_and_the_online_page_work_on_sqlite(tmp_path):
    """The embedded default (`make run`): the same views and the same SQL over SQLite's copies of the views."""
    from flask_migrate import upgrade

    from isp_admin import create_app
    from isp_admin.services.network import credentials
    from tests.conftest import ROOT, FreshContextClient, app_config
    from tests.factories import PASSWORD, UserFactory

    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance"))
    app.test_client_class = FreshContextClient
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        user = UserFactory(role="support")
        plan = PlanFactory(code="LITE", download_mbps=20, upload_mbps=5, data_cap_gb=1)
        sub = SubscriptionFactory(plan=plan, pppoe_username="lite", static_ip="100.64.5.5", start_date=date(2026, 1, 1))
        db.session.commit()
        credentials.set_password(sub.id)
        db.session.commit()
        accounting("lite", ip="100.64.5.5", received=GB // 4)
        client = app.test_client()
        assert client.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 302
        card = network_card(client.get(f"/subscriptions/{sub.id}"))
        assert "Accept: plan-LITE, Mikrotik-Rate-Limit 5M/20M, Framed-IP-Address 100.64.5.5" in card
        assert ">25.0%<" in card and "online" in card
        page = text_of(client.get("/network/sessions?q=100.64"))
        assert f'/subscriptions/{sub.id}#network">lite</a>' in page
        db.session.remove()
        db.engine.dispose()


def test_the_new_pages_need_no_inline_script_or_style(client, login, sub):
    from tests.web.test_security_headers import inline_code

    accounting("wanjiru", received=GB)
    accounting("wanjiru", stopped=True, minutes_ago=90)
    login("admin")
    pages = [client.post(f"/subscriptions/{sub.id}/credentials"), client.get(f"/subscriptions/{sub.id}"),
             client.get("/network/sessions"), client.get(f"/customers/{sub.customer_id}")]
    assert 'id="new-password"' in text_of(pages[0]) and "<progress" in text_of(pages[1])
    assert [inline_code(page.get_data(as_text=True)) for page in pages] == [[], [], [], []]

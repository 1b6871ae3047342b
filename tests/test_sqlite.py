"""The embedded default: the main staff flows work on SQLite without Redis, as `make run` serves them."""
from __future__ import annotations

from datetime import date

import pytest
from flask_migrate import upgrade
from sqlalchemy import func, select

from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.models import Customer, Subscription
from tests.conftest import ROOT, FreshContextClient, app_config
from tests.factories import PASSWORD, UserFactory


@pytest.fixture
def sqlite_app(tmp_path):
    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance"))
    app.test_client_class = FreshContextClient
    assert app.config["CACHE_TYPE"] == "SimpleCache" and app.config["RATELIMIT_STORAGE_URI"] == "memory://"
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        UserFactory(email="desk@isp.example", role="support")
        yield app
        db.session.remove()
        db.engine.dispose()


def test_a_support_agent_runs_the_day_on_sqlite(sqlite_app):
    client = sqlite_app.test_client()
    assert client.post("/login", data={"email": "desk@isp.example", "password": PASSWORD}).status_code == 302
    result = sqlite_app.test_cli_runner().invoke(args=["data", "generate-test-data", "--customers", "120"])
    assert result.exit_code == 0, result.output

    response = client.post("/customers/new", data={"name": "Wanjiru Kamau", "email": "W.Kamau@Mail.example",
                                                   "phone": "+254 711 000 111"})
    assert response.status_code == 302
    customer = db.session.scalar(select(Customer).where(Customer.name == "Wanjiru Kamau"))
    assert customer.email == "w.kamau@mail.example"
    plan_id = db.session.scalar(select(Subscription.plan_id).join(Subscription.plan).limit(1))
    response = client.post(f"/customers/{customer.id}/subscriptions/new", data={
        "plan_id": plan_id, "start_date": date.today().isoformat(), "billing_day": "31",
        "pppoe_username": "wanjiru.k", "static_ip": "100.127.9.9"})
    assert response.status_code == 302, response.data[:400]

    for query in ("wanjiru kam", "WANJIRU.K", "100.127.9.9", customer.account_number.lower(), "711 000"):
        page = client.get("/customers/", query_string={"q": query}).get_data(as_text=True)
        assert "Wanjiru Kamau" in page, query

    sub = db.session.scalar(select(Subscription).where(Subscription.pppoe_username == "wanjiru.k"))
    assert client.post(f"/subscriptions/{sub.id}/suspend", data={"reason": "vacation"}).status_code == 302
    assert db.session.get(Customer, customer.id).status == "suspended"
    assert client.post(f"/subscriptions/{sub.id}/resume").status_code == 302
    assert db.session.get(Subscription, sub.id).status == "active"

    # Walk the whole list by cursor: every customer exactly once.
    seen, url = [], "/customers/?size=25&sort=name"
    while url:
        html = client.get(url).get_data(as_text=True)
        seen += [part.split('"')[0] for part in html.split('href="/customers/')[1:]
                 if part.split('"')[0].isdigit()]
        marker = 'href="/customers/?size=25&amp;sort=name&amp;after='
        url = ("/customers/?size=25&sort=name&after=" + html.split(marker)[1].split('"')[0]) if marker in html \
            else None
    assert len(set(seen)) == db.session.scalar(select(func.count()).select_from(Customer)) == 121


def test_the_billing_pages_dry_run_writes_nothing_on_sqlite(sqlite_app):
    # pysqlite committed a SAVEPOINT's work on RELEASE when no transaction had begun: opening the Billing page
    # (tonight's steps applied in savepoints, then rolled back) issued the night's invoices for real.
    from isp_admin.models import Invoice, Notification
    from isp_admin.services.sample_data.generator import generate

    UserFactory(email="boss@isp.example", role="admin")
    generate(40, seed=7)
    db.session.commit()
    client = sqlite_app.test_client()
    assert client.post("/login", data={"email": "boss@isp.example", "password": PASSWORD}).status_code == 302

    def counts() -> tuple[int, int]:
        db.session.remove()
        return tuple(db.session.scalar(select(func.count()).select_from(model)) for model in (Invoice, Notification))

    before = counts()
    page = client.get("/billing/run").get_data(as_text=True)
    assert "would" in page.lower()  # the preview lists what tonight would do
    assert counts() == before

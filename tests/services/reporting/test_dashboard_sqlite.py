"""The dashboard on SQLite (`make run`'s database, with the simple in-process cache): the same figures, to the cent,
for the same built world, and the page itself."""
from __future__ import annotations

import pytest
from flask_migrate import upgrade

from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.services.reporting.dashboard import dashboard_figures, mrr_trend, operations
from tests.conftest import ROOT, FreshContextClient, app_config
from tests.factories import PASSWORD, UserFactory
from tests.services.reporting.test_dashboard import AS_OF, BUCKETS, build_world
from tests.web.test_dashboard import figure


@pytest.fixture
def sqlite_app(tmp_path):
    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance"))
    app.test_client_class = FreshContextClient
    assert app.config["CACHE_TYPE"] == "SimpleCache"
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        yield app
        db.session.remove()
        db.engine.dispose()


def test_the_figures_on_sqlite_equal_the_hand_computed_ones(sqlite_app):
    build_world()

    figures = dashboard_figures(AS_OF)

    assert {b.key: (b.cents, b.invoices) for b in figures.buckets} == BUCKETS
    assert (figures.receivable_cents, figures.overdue_cents, figures.debtors) == (49_700, 24_700, 3)
    assert (figures.collected_today.cents, figures.collected_today.payments) == (1_000, 1)
    assert (figures.collected_month.cents, figures.collected_month.payments) == (3_300, 3)
    assert {m.month.isoformat(): m.cents for m in mrr_trend(AS_OF) if m.cents} == {
        "2025-04-01": 2_500, "2026-02-01": 4_900, "2026-03-01": 6_134}
    assert (figures.mrr_cents, figures.non_payment_customers) == (10_800, 1)
    assert figures.customers_by_status == {"active": 3, "suspended": 2, "closed": 0}
    assert operations().failed_notifications == 0


def test_the_page_answers_on_sqlite_and_a_payment_shows_at_once(sqlite_app):
    from isp_admin.services.billing import payments
    from isp_admin.services.platform.clock import today

    people = build_world()
    user = UserFactory(role="readonly")
    client = sqlite_app.test_client()
    assert client.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 302
    first = client.get("/")
    assert first.status_code == 200 and 'id="receivables"' in first.get_data(as_text=True)

    payments.record_payment(people["ann"].id, 4_321, "cash", today(), today())
    db.session.commit()

    day = today().isoformat()
    assert figure(client.get("/").get_data(as_text=True), "collected-today") == (
        f"/payments/?received_from={day}&received_to={day}", "$43.21")

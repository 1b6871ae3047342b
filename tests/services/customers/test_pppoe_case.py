"""A PPPoE login is unique whatever its case: ZOE.OBRIEN can no longer sit beside zoe.obrien.

Stored as typed, compared lower-cased: in the service's check (forms and API alike), in the database's unique index
(the guard against races and bulk writes, on PostgreSQL and SQLite), in the sample-data generator, and in the
upgrade itself, which stops on existing case-duplicates and lists them instead of renaming anyone's login.
"""
from __future__ import annotations

import pytest
from alembic import command
from flask_migrate import downgrade, upgrade
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from isp_admin import create_app
from isp_admin.errors import Conflict
from isp_admin.extensions import db
from isp_admin.models import Subscription
from isp_admin.services.customers import subscriptions
from isp_admin.services.platform.clock import today
from isp_admin.services.sample_data.generator import generate
from tests.api.helpers import assert_error, assert_ok, bearer
from tests.conftest import ROOT, _postgres_available, app_config, create_database, drop_database, truncate_all
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

MIGRATIONS = str(ROOT / "migrations")


def live_logins() -> list[str]:
    return sorted(db.session.scalars(select(Subscription.pppoe_username).where(
        Subscription.status != "cancelled", Subscription.pppoe_username.is_not(None))))


def test_the_service_refuses_a_login_that_differs_only_in_case_and_keeps_the_case_typed(app):
    taken = SubscriptionFactory(pppoe_username="zoe.obrien")
    customer, plan = CustomerFactory(), PlanFactory()

    for typed in ("ZOE.OBRIEN", "Zoe.OBrien", " zoe.OBRIEN "):
        with pytest.raises(Conflict) as refused:
            subscriptions.add_subscription(customer.id, plan.id, today(), pppoe_username=typed)
        assert refused.value.details == {"pppoe_username": "Already used by another live subscription."}
        db.session.rollback()
    other = subscriptions.add_subscription(customer.id, plan.id, today(), pppoe_username="Ann.Wanjiru")
    db.session.commit()
    with pytest.raises(Conflict):
        subscriptions.update_network(other.id, "ZOE.obrien", None, None)
    db.session.rollback()

    # Its own login in another case is no clash with itself; what was typed is what is stored.
    subscriptions.update_network(taken.id, "ZOE.OBRIEN", None, None)
    db.session.commit()
    assert live_logins() == ["Ann.Wanjiru", "ZOE.OBRIEN"]


def test_a_cancelled_subscriptions_login_is_free_in_any_case(app):
    SubscriptionFactory(pppoe_username="zoe.obrien", status="cancelled", end_date=today())
    sub = subscriptions.add_subscription(CustomerFactory().id, PlanFactory().id, today(), pppoe_username="Zoe.OBrien")
    db.session.commit()
    assert sub.pppoe_username == "Zoe.OBrien" and live_logins() == ["Zoe.OBrien"]


def test_the_database_refuses_a_case_duplicate_that_bypasses_the_service(app):
    SubscriptionFactory(pppoe_username="zoe.obrien")
    with pytest.raises(IntegrityError):
        SubscriptionFactory(pppoe_username="ZOE.OBRIEN")
    db.session.rollback()
    assert live_logins() == ["zoe.obrien"]


def test_the_form_says_the_login_is_taken(client, login):
    SubscriptionFactory(pppoe_username="zoe.obrien")
    customer, plan = CustomerFactory(), PlanFactory()
    login()
    response = client.post(f"/customers/{customer.id}/subscriptions/new",
                           data={"plan_id": plan.id, "start_date": today().isoformat(), "pppoe_username": "ZOE.OBRIEN"})
    assert response.status_code == 200
    assert "Already used by another live subscription." in response.get_data(as_text=True)
    assert live_logins() == ["zoe.obrien"]


def test_the_api_answers_409_for_a_login_in_another_case(client):
    writer = bearer("support", "read,write")
    SubscriptionFactory(pppoe_username="zoe.obrien")
    customer, plan = CustomerFactory(), PlanFactory()
    body = assert_error(client.post("/api/subscriptions/", headers=writer, json={
        "customer_id": customer.id, "plan_id": plan.id, "pppoe_username": "ZOE.OBRIEN"}), 409, "CONFLICT")
    assert set(body["error"]["details"]) == {"pppoe_username"}
    created = assert_ok(client.post("/api/subscriptions/", headers=writer, json={
        "customer_id": customer.id, "plan_id": plan.id, "pppoe_username": "Zoe.Second"}), 201)
    assert_error(client.patch(f"/api/subscriptions/{created['id']}/", headers=writer,
                              json={"pppoe_username": "zOE.oBRIEN"}), 409, "CONFLICT")
    assert live_logins() == ["Zoe.Second", "zoe.obrien"]


def test_generated_logins_never_repeat_a_login_staff_typed_in_another_case(app):
    """The generator names logins after account numbers; one a person typed in capitals is the same login."""
    generate(40, seed=16)
    db.session.commit()
    first = db.session.scalar(select(Subscription.pppoe_username).where(Subscription.pppoe_username.is_not(None))
                              .order_by(Subscription.id).limit(1))
    truncate_all()
    SubscriptionFactory(pppoe_username=first.upper())  # e.g. C01234567-1, typed before the data was generated
    db.session.commit()

    generate(40, seed=16)  # the same draw: its first login is that one again
    db.session.commit()

    lowered = func.lower(Subscription.pppoe_username)
    repeated = db.session.execute(select(lowered, func.count()).where(
        Subscription.status != "cancelled", Subscription.pppoe_username.is_not(None))
        .group_by(lowered).having(func.count() > 1)).all()
    assert repeated == []
    assert first.upper() in live_logins() and first not in live_logins()
    assert len(live_logins()) > 30


def _insert_live_subscriptions(conn, logins: list[str]) -> None:
    conn.execute(text("INSERT INTO plans (id, code, name, download_mbps, upload_mbps, monthly_price_cents, "
                      "setup_fee_cents, tax_rate_bp, currency, active, created_at, updated_at) VALUES (1, "
                      "'P', 'Plan', 10, 5, 3000, 0, 0, 'USD', true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    for n, login in enumerate(logins, 1):
        conn.execute(text("INSERT INTO customers (id, account_number, name, status, created_at, updated_at) "
                          "VALUES (:n, :account, 'Someone', 'active', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                     {"n": n, "account": f"C{n:08d}"})
        conn.execute(text("INSERT INTO subscriptions (id, customer_id, plan_id, status, start_date, billing_day, "
                          "next_bill_date, pppoe_username, created_at, updated_at) VALUES (:n, :n, 1, :status, "
                          "'2026-01-01', 1, '2026-02-01', :login, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                     {"n": n, "login": login, "status": "cancelled" if login == "ann" else "active"})


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_upgrade_stops_on_case_duplicates_and_lists_them_then_runs_once_they_are_renamed(
        tmp_path, worker_id, dialect):
    if dialect == "postgresql":
        if not _postgres_available():
            pytest.skip("PostgreSQL not reachable")
        name = f"isp_admin_pppoe_case_{worker_id}"
        url = create_database(name)
    else:
        url = f"sqlite:///{tmp_path}/case.sqlite3"
    app = create_app(app_config(url, None, tmp_path / "instance"))
    try:
        with app.app_context():
            upgrade(directory=MIGRATIONS, revision="0010_customer_actor_lookups")
            with db.engine.begin() as conn:
                # A cancelled "ann" frees its login: only the live ones count.
                _insert_live_subscriptions(conn, ["zoe.obrien", "ZOE.OBRIEN", "Zoe.OBrien", "ann", "ANN", "bob"])

            # Alembic itself, for the exception: `flask db upgrade` prints its message and exits 1.
            config = app.extensions["migrate"].migrate.get_config(MIGRATIONS)
            with pytest.raises(RuntimeError) as refused:
                command.upgrade(config, "head")
            message = str(refused.value)
            assert "1 PPPoE login(s)" in message and "Nothing was changed" in message
            assert ("'zoe.obrien' (subscription 1, customer C00000001), 'ZOE.OBRIEN' (subscription 2, customer "
                    "C00000002), 'Zoe.OBrien' (subscription 3, customer C00000003)") in message
            assert "'ann'" not in message and "'ANN'" not in message and "'bob'" not in message

            # Staff rename the others on the running release; then the upgrade goes through, logins as typed.
            with db.engine.begin() as conn:
                conn.execute(text("UPDATE subscriptions SET pppoe_username = 'zoe.obrien2' WHERE id = 2"))
                conn.execute(text("UPDATE subscriptions SET pppoe_username = 'Zoe.OBrien3' WHERE id = 3"))
            upgrade(directory=MIGRATIONS)
            with pytest.raises(IntegrityError), db.engine.begin() as conn:
                conn.execute(text("UPDATE subscriptions SET pppoe_username = 'ZOE.OBRIEN2' WHERE id = 1"))
            with db.engine.connect() as conn:
                logins = conn.execute(text("SELECT pppoe_username FROM subscriptions ORDER BY id")).scalars().all()
            assert logins == ["zoe.obrien", "zoe.obrien2", "Zoe.OBrien3", "ann", "ANN", "bob"]

            # And back: 0010's index is on the login as typed.
            downgrade(directory=MIGRATIONS, revision="0010_customer_actor_lookups")
            with db.engine.begin() as conn:
                conn.execute(text("UPDATE subscriptions SET pppoe_username = 'ZOE.OBRIEN2' WHERE id = 1"))
            db.session.remove()
            db.engine.dispose()
    finally:
        if dialect == "postgresql":
            drop_database(name)

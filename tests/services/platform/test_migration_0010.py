"""Migration 0010: audit events may name a customer (on PostgreSQL and SQLite, and back), and the portal's email
sign-in and the refund lookup by the provider's reference are served by their new indexes on PostgreSQL."""
from __future__ import annotations

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import IntegrityError

from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.services.payments.events import find_attempt
from isp_admin.services.payments.providers.base import Notice
from isp_admin.services.portal.accounts import customers_for
from tests.conftest import ROOT, _postgres_available, app_config, create_database, drop_database

MIGRATIONS = str(ROOT / "migrations")
BEFORE = "0009_payments_portal"
ROWS = 3000


def _audit(conn, actor_type: str, actor_id: int | None = None) -> None:
    conn.execute(text("INSERT INTO audit_events (at, actor_type, actor_id, actor_label, action, entity_type, "
                      "entity_id, customer_id) VALUES (CURRENT_TIMESTAMP, :type, :id, 'portal:C00000001', "
                      "'portal_account.login', 'portal_accounts', 1, 1)"), {"type": actor_type, "id": actor_id})


def _refused(actor_type: str) -> bool:
    try:
        with db.engine.begin() as conn:
            _audit(conn, actor_type)
    except IntegrityError:
        return True
    return False


def _indexes() -> set[str]:
    inspector = inspect(db.engine)
    return {ix["name"] for table in ("customers", "payments") for ix in inspector.get_indexes(table)}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_the_customer_actor_comes_and_goes_with_the_migration(tmp_path, worker_id, dialect):
    if dialect == "postgresql":
        if not _postgres_available():
            pytest.skip("PostgreSQL not reachable")
        name = f"isp_admin_m0010_{worker_id}"
        url = create_database(name)
    else:
        url = f"sqlite:///{tmp_path}/m0010.sqlite3"
    app = create_app(app_config(url, None, tmp_path / "instance"))
    try:
        with app.app_context():
            upgrade(directory=MIGRATIONS, revision=BEFORE)
            with db.engine.begin() as conn:
                _audit(conn, "system")
            assert _refused("customer")

            upgrade(directory=MIGRATIONS)
            with db.engine.begin() as conn:
                _audit(conn, "customer", 1)
            assert _refused("robot")  # still a check, only one value wider
            assert {"ix_customers_email", "ix_payments_provider_reference"} <= _indexes()
            # SQLite copied the table to change its check: the other constraints and indexes came along.
            assert {ix["name"] for ix in inspect(db.engine).get_indexes("audit_events")} == {
                "ix_audit_events_customer", "ix_audit_events_entity"}

            downgrade(directory=MIGRATIONS, revision=BEFORE)
            with db.engine.connect() as conn:
                rows = conn.execute(text("SELECT actor_type, actor_id, actor_label FROM audit_events ORDER BY id"))
                assert rows.all() == [("system", None, "portal:C00000001")] * 2  # what 0009 wrote for the portal
            assert _refused("customer")
            assert not {"ix_customers_email", "ix_payments_provider_reference"} & _indexes()

            upgrade(directory=MIGRATIONS)  # and up again, over the downgraded rows
            db.session.remove()
            db.engine.dispose()
    finally:
        if dialect == "postgresql":
            drop_database(name)


def _plan(action) -> str:
    """PostgreSQL's plan of the first statement `action` runs, with the parameters it ran with."""
    statements = []

    def record(_conn, _cursor, statement, parameters, *_args):
        statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    db.session.rollback()
    statement, parameters = statements[0]
    with db.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()
        cursor.execute("EXPLAIN " + statement, parameters)
        return "\n".join(row[0] for row in cursor.fetchall())


@pytest.fixture
def many_payments(app):
    """ROWS customers, each with one Stripe payment made through an attempt (analysed, as a live database is)."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("plans are PostgreSQL's")
    db.session.execute(text(
        "INSERT INTO customers (account_number, name, email, status, created_at, updated_at) "
        "SELECT 'C' || lpad(n::text, 8, '0'), 'Customer ' || n, 'person' || n || '@mail.example', 'active', now(), "
        "now() FROM generate_series(1, :rows) AS n"), {"rows": ROWS})
    db.session.execute(text(
        "INSERT INTO payments (customer_id, amount_cents, currency, method, reference, provider, provider_ref, "
        "received_on, status, recorded_by, created_at) SELECT id, 1000, 'USD', 'card', 'pi_' || id, 'stripe', "
        "'cs_' || id, current_date, 'completed', 'portal', now() FROM customers"))
    db.session.execute(text(
        "INSERT INTO payment_attempts (public_id, customer_id, provider, provider_ref, amount_cents, currency, "
        "status, payment_id, created_by, created_at, updated_at, checks) SELECT 'pub' || id, customer_id, "
        "'stripe', provider_ref, 1000, 'USD', 'succeeded', id, 'portal', now(), now(), 0 FROM payments"))
    db.session.commit()
    db.session.execute(text("ANALYZE customers, payments, payment_attempts"))
    db.session.commit()


def test_portal_sign_in_by_email_uses_the_email_index(app, many_payments):
    plan = _plan(lambda: customers_for("Person1234@Mail.Example", limit=2))
    assert "ix_customers_email" in plan, plan


def test_a_dashboard_refund_finds_its_payment_by_the_reference_index(app, many_payments):
    notice = Notice(event_id="evt_1", event_type="charge.refunded", kind="refunded", receipt="pi_1234")
    plan = _plan(lambda: find_attempt("stripe", notice))
    # Either index that leads with the reference serves it (0013 adds one on the reference alone, for the search).
    assert "ix_payments_provider_reference" in plan or "ix_payments_reference" in plan, plan

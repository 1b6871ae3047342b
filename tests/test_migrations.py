"""Migrations build the schema the models describe, on PostgreSQL and on SQLite."""
from __future__ import annotations

import warnings

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from isp_admin import create_app
from isp_admin.database import include_object
from isp_admin.extensions import db
from tests.conftest import ROOT, _postgres_available, app_config, create_database, drop_database

MIGRATIONS = str(ROOT / "migrations")


def _diff() -> list:
    with db.engine.connect() as conn, warnings.catch_warnings():
        # SQLAlchemy cannot reflect SQLite's expression indexes (the lower(login) ones of 0011), so Alembic skips
        # them there, saying so twice; PostgreSQL compares them. test_pppoe_case.py checks them on SQLite.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression-based index")
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": include_object, "render_as_batch": True})
        return compare_metadata(context, db.metadata)


def _check_round_trip(database_url: str, tmp_path) -> None:
    app = create_app(app_config(database_url, None, tmp_path / "instance"))
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        assert _diff() == [], "models and migrations disagree"
        tables = set(inspect(db.engine).get_table_names())
        assert {"users", "api_tokens", "customers", "plans", "subscriptions", "audit_events"} <= tables
        downgrade(directory=MIGRATIONS, revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade(directory=MIGRATIONS)
        assert _diff() == []
        db.engine.dispose()


def test_sqlite_upgrade_matches_models(tmp_path):
    _check_round_trip(f"sqlite:///{tmp_path}/migrate.sqlite3", tmp_path)


@pytest.mark.skipif(not _postgres_available(), reason="PostgreSQL not reachable")
def test_postgres_upgrade_matches_models(tmp_path, worker_id):
    name = f"isp_admin_migrate_{worker_id}"
    url = create_database(name)
    try:
        _check_round_trip(url, tmp_path)
    finally:
        drop_database(name)


@pytest.mark.skipif(not _postgres_available(), reason="PostgreSQL not reachable")
def test_postgres_has_trigram_search_indexes(app):
    indexes = {ix["name"] for table in ("customers", "subscriptions")
               for ix in inspect(db.engine).get_indexes(table)}
    assert {"trgm_customers_search_text", "trgm_subscriptions_pppoe_username",
            "trgm_subscriptions_static_ip"} <= indexes


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_0005_keeps_credits_issued_twice_but_relabels_the_copies_for_review(tmp_path, worker_id, dialect):
    """Books from before 0005 may hold one cancellation credited twice (the race it closes): the upgrade must not
    fail on its new unique index, nor drop money already given; the copy becomes a 'manual' credit saying so."""
    from sqlalchemy import text

    if dialect == "postgresql":
        if not _postgres_available():
            pytest.skip("PostgreSQL not reachable")
        name = f"isp_admin_dup_credits_{worker_id}"
        url = create_database(name)
    else:
        url = f"sqlite:///{tmp_path}/dup.sqlite3"
    app = create_app(app_config(url, None, tmp_path / "instance"))
    try:
        with app.app_context():
            upgrade(directory=MIGRATIONS, revision="0004_change_versions")
            with db.engine.begin() as conn:
                conn.execute(text("INSERT INTO customers (id, account_number, name, status, created_at, updated_at) "
                                  "VALUES (1, 'C1', 'Ann', 'active', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
                conn.execute(text("INSERT INTO plans (id, code, name, download_mbps, upload_mbps, monthly_price_cents, "
                                  "setup_fee_cents, tax_rate_bp, currency, active, created_at, updated_at) VALUES (1, "
                                  "'P', 'Plan', 10, 5, 3000, 0, 0, 'USD', true, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
                conn.execute(text("INSERT INTO subscriptions (id, customer_id, plan_id, status, start_date, end_date, "
                                  "billing_day, next_bill_date, created_at, updated_at) VALUES (1, 1, 1, 'cancelled', "
                                  "'2026-01-01', '2026-01-20', 1, '2026-02-01', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
                for number in ("CN-2026-000001", "CN-2026-000002", "CN-2026-000003"):
                    conn.execute(text(
                        "INSERT INTO credit_notes (number, customer_id, subscription_id, kind, reason, issue_date, "
                        "currency, subtotal_cents, tax_cents, amount_cents, created_at) VALUES (:n, 1, 1, "
                        "'cancellation', 'Unused 12 days', '2026-01-20', 'USD', 1161, 0, 1161, CURRENT_TIMESTAMP)"),
                        {"n": number})
            upgrade(directory=MIGRATIONS)
            rows = db.session.execute(text("SELECT number, kind, reason FROM credit_notes ORDER BY id")).all()
            db.session.remove()
            db.engine.dispose()
    finally:
        if dialect == "postgresql":
            drop_database(name)

    assert [(number, kind) for number, kind, _ in rows] == [
        ("CN-2026-000001", "cancellation"), ("CN-2026-000002", "manual"), ("CN-2026-000003", "manual")]
    assert all(reason.startswith("Duplicate of credit note CN-2026-000001 ") for _, _, reason in rows[1:])

"""Migrations build the schema the models describe, on PostgreSQL and on SQLite."""
from __future__ import annotations

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
    with db.engine.connect() as conn:
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

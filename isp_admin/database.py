"""Engine-level settings (SQLite foreign keys) and small SQL helpers shared by the services."""
from __future__ import annotations

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine

from isp_admin.extensions import db


def _enable_sqlite_foreign_keys(dbapi_connection, _record) -> None:
    # SQLite ignores FOREIGN KEY clauses unless asked, per connection.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def escape_like(text: str) -> str:
    """Escape LIKE wildcards in user text (patterns use escape="\\")."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def register_database_events(app: Flask) -> None:
    """Attach the connect hook to the app's engine (per-request SQL timing lives in observability.timing)."""
    with app.app_context():
        engine: Engine = db.engine
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _enable_sqlite_foreign_keys)


def dialect_name() -> str:
    """Return the name of the current database dialect ('postgresql' or 'sqlite')."""
    return db.engine.dialect.name


# Indexes that exist only on PostgreSQL (trigram search) are created by migrations, not declared on the
# models; Alembic must neither drop them nor report them as drift.
POSTGRES_ONLY_INDEX_PREFIX = "trgm_"


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Tell Alembic autogenerate which schema objects the models own."""
    return not (type_ == "index" and name and name.startswith(POSTGRES_ONLY_INDEX_PREFIX))

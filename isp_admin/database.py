"""Engine-level settings (SQLite foreign keys), small SQL helpers shared by the services, and Flask-Migrate's set-up."""
from __future__ import annotations

import ast
import time
from pathlib import Path

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError

from isp_admin.extensions import db


def _enable_sqlite_foreign_keys(dbapi_connection, _record) -> None:
    # SQLite ignores FOREIGN KEY clauses unless asked, per connection.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin_before_savepoint(connection, _name) -> None:
    # pysqlite begins a transaction only before a DML statement, so a SAVEPOINT sent first opens a transaction of
    # its own, which its RELEASE commits: a dry run (steps applied in savepoints, then rolled back) wrote for real on
    # SQLite. Beginning first keeps the savepoint inside the transaction the session rolls back (reads outside
    # savepoints keep pysqlite's lock-free default, so a reader never blocks a writer).
    dbapi_connection = connection.connection.dbapi_connection
    if not dbapi_connection.in_transaction:
        dbapi_connection.execute("BEGIN")


# A connection used within this many seconds is handed out unpinged: under load every request reuses one that just
# served, and a ping would be a fifth of a list request's round trips. One idle longer (or across an outage) is pinged.
PING_AFTER_IDLE_SECONDS = 1.0
_CHECKED_IN = "isp_admin.checked_in_at"


def ping_when_idle(engine: Engine) -> None:
    """Ping a pooled connection before use only when it sat unused for PING_AFTER_IDLE_SECONDS.

    A dead one raises DisconnectionError, so the pool replaces it (as pool_pre_ping does). A restart within the
    second after a connection's last use fails that request's first statement instead (a 503, as for a request in
    flight at the restart), and SQLAlchemy then invalidates the whole pool, so the next requests reconnect.
    """
    @event.listens_for(engine, "connect")
    def fresh(_dbapi_connection, record):
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def returned(_dbapi_connection, record):
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection, record, _proxy):
        used = record.info.get(_CHECKED_IN)
        if used is not None and time.monotonic() - used < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection is dead: {exc}") from exc


def escape_like(text: str) -> str:
    """Escape LIKE wildcards in user text (patterns use escape="\\")."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def register_database_events(app: Flask) -> None:
    """Attach the connect hook to the app's engine (per-request SQL timing lives in observability.timing)."""
    from isp_admin.services.platform.after_commit import register_after_commit

    register_after_commit()
    with app.app_context():
        engine: Engine = db.engine
    if engine.dialect.name == "postgresql" and not engine.pool._pre_ping:  # noqa: SLF001  (what the config chose)
        ping_when_idle(engine)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _enable_sqlite_foreign_keys)
        event.listen(engine, "savepoint", _sqlite_begin_before_savepoint)


# Indexes that exist only on PostgreSQL (trigram search) are created by migrations, not declared on the
# models; Alembic must neither drop them nor report them as drift.
POSTGRES_ONLY_INDEX_PREFIX = "trgm_"


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Tell Alembic autogenerate which schema objects the models own."""
    return not (type_ == "index" and name and name.startswith(POSTGRES_ONLY_INDEX_PREFIX))


class DeferredMigrate:
    """Flask-Migrate's entry in app.extensions, set up in its place on first use (`flask db`, a test's upgrade()).

    Alembic and Mako cost every web worker ~6 MB and no request needs them: readiness reads the migration
    scripts with read_migrations below.
    """

    def __init__(self, app: Flask, **options):
        self._app = app
        self._options = options

    def __getattr__(self, name: str):
        # Reached only for the real extension's attributes (migrate, db, directory, configure_args, metadata);
        # never for private names, so a half-built stand-in (copy, pickle) cannot recurse.
        if name.startswith("_"):
            raise AttributeError(name)
        from flask_migrate import Migrate

        Migrate().init_app(self._app, db, **self._options)  # replaces this entry (and adds the real `flask db`)
        return getattr(self._app.extensions["migrate"], name)


def migrations_directory(app: Flask) -> Path:
    """The Alembic scripts the code ships."""
    return Path(app.root_path).parent / "migrations"


def register_migrations(app: Flask) -> None:
    """Put Flask-Migrate's configuration in place, to be loaded when something migrates."""
    app.extensions["migrate"] = DeferredMigrate(app, directory=str(migrations_directory(app)), compare_type=True,
                                                render_as_batch=True, include_object=include_object)


def read_migrations(directory: Path) -> tuple[str | None, frozenset[str]]:
    """Return the head revision of the Alembic scripts in `directory` and every revision they define.

    Read as Alembic reads them (each script's `revision` and `down_revision`; the head is the revision no other
    script revises; several heads are an error), without importing Alembic.
    """
    revises: dict[str, tuple[str, ...]] = {}
    for path in sorted((directory / "versions").glob("*.py")):
        if path.name.startswith((".#", "__init__")):  # what Alembic skips: editor lock files, a package marker
            continue
        names = _assigned(path, ("revision", "down_revision"))
        if not isinstance(names.get("revision"), str):
            raise RuntimeError(f"migration {path.name} declares no revision")
        down = names.get("down_revision")
        revises[names["revision"]] = tuple(down) if isinstance(down, list | tuple) else ((down,) if down else ())
    revised = {down for downs in revises.values() for down in downs}
    heads = sorted(set(revises) - revised)
    if len(heads) > 1:
        raise RuntimeError(f"the migrations have several heads ({', '.join(heads)}): merge them")
    return (heads[0] if heads else None), frozenset(revises)


def _assigned(path: Path, names: tuple[str, ...]) -> dict:
    """The literal values a Python file assigns to `names` at its top level (plain or annotated)."""
    found = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target = node.target
        else:
            continue
        if isinstance(target, ast.Name) and target.id in names:
            found[target.id] = ast.literal_eval(node.value)
    return found

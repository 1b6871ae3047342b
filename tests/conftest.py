"""Fixtures: a migrated PostgreSQL database per test worker, Redis, app/client/runner, logins, counters.

PostgreSQL and Redis are the real services (TEST_DATABASE_URL / TEST_REDIS_URL, defaulting to the local
127.0.0.1 ones). In CI (CI=true) an unreachable service fails the run; on a laptop without them the suite
falls back to SQLite and in-process caches, and says so.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from flask import has_app_context
from flask.testing import FlaskClient
from flask_migrate import upgrade
from sqlalchemy import create_engine, event, make_url, text

from isp_admin import create_app
from isp_admin.config import load_config, normalise_database_url
from isp_admin.extensions import db
from tests import factories
from tests.factories import PASSWORD  # noqa: F401  (re-exported for tests)

CI = os.environ.get("CI", "").lower() == "true"
PG_URL = normalise_database_url(
    os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parent.parent
# Names per test run, so two runs on one machine (or xdist workers) never drop each other's database.
RUN_ID = f"{os.getpid()}"


def _postgres_available() -> bool:
    try:
        engine = create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001
        return False


def _redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def create_database(name: str) -> str:
    """(Re)create an empty PostgreSQL database beside TEST_DATABASE_URL's and return its URL."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(PG_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    """Drop a database made by create_database."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def app_config(database_url: str, redis_url: str | None, instance: Path, **overrides) -> dict:
    """Build a testing config as the environment would, plus overrides."""
    env = {
        "APP_ENV": "testing",
        "SECRET_KEY": "test-secret-key-not-for-production",
        "DATABASE_URL": database_url,
        "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",  # fast in tests; production uses scrypt
        "CACHE_KEY_PREFIX": f"test:{RUN_ID}:",
        "RATELIMIT_KEY_PREFIX": f"test-rl:{RUN_ID}",
        # Tests that want the after-commit CoA sweep queued turn it on; elsewhere it would fill the test queue.
        "NETWORK_KICK": "false",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    config = load_config(instance, env)
    config.update({"WTF_CSRF_ENABLED": False, "RATELIMIT_ENABLED": False, "SERVER_NAME": None})
    config.update(overrides)
    return config


class FreshContextClient(FlaskClient):
    """A test client whose every request runs in its own app context, as in production.

    Tests keep an app context pushed for factories and assertions; without this, requests would reuse it and
    share `flask.g` (Flask-Login's cached user) and the database session with the test and with each other.
    """

    def open(self, *args, **kwargs):
        # Buffered, as a WSGI server does: the response is read and closed, so work scheduled with call_on_close
        # (the reset email) has run when the test looks.
        kwargs.setdefault("buffered", True)
        with self.application.app_context():
            response = super().open(*args, **kwargs)
        if has_app_context():
            db.session.expire_all()  # the test's own session re-reads what the request changed
        return response


@pytest.fixture(scope="session")
def backends(tmp_path_factory):
    """The database URL and Redis URL this worker uses, with the schema migrated to head."""
    database_name = None
    if _postgres_available():
        database_name = f"isp_admin_test_{RUN_ID}"
        database_url = create_database(database_name)
    elif CI:
        pytest.exit(f"PostgreSQL is not reachable at {PG_URL}; CI needs it", returncode=1)
    else:
        warnings.warn("PostgreSQL not reachable: running on SQLite", stacklevel=1)
        database_url = f"sqlite:///{tmp_path_factory.mktemp('db')}/test.sqlite3"
    redis_url = None
    if _redis_available():
        redis_url = REDIS_URL  # keys carry the run's prefix (RUN_ID), so runs never see each other's
    elif CI:
        pytest.exit(f"Redis is not reachable at {REDIS_URL}; CI needs it", returncode=1)
    instance = tmp_path_factory.mktemp("instance")
    app = create_app(app_config(database_url, redis_url, instance))
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        db.engine.dispose()
    yield {"database_url": database_url, "redis_url": redis_url}
    if database_name:
        drop_database(database_name)


def data_tables() -> list:
    """Every table a test may empty: all but change_versions, whose rows (one per listed table) must stay."""
    return [t for t in db.metadata.sorted_tables if t.name != "change_versions"]


def truncate_all() -> None:
    """Empty every table (keeping the migration version and the data-version rows) so each test starts clean."""
    # change_versions holds one row per listed table (migration 0004); TRUNCATE bumps them, which is what forgets
    # one test's cached counts and anchors before the next.
    tables = [t.name for t in data_tables()]
    if db.engine.dialect.name == "postgresql":
        db.session.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        for table in reversed(tables):
            db.session.execute(text(f"DELETE FROM {table}"))
    db.session.commit()
    _seed_defaults()


def _seed_defaults() -> None:
    """Put back the rows a fresh install has from its migrations (the network policy and groups)."""
    from isp_admin.services.network.settings import ensure_defaults

    ensure_defaults()
    db.session.commit()


def forget_rate_limit_counters(redis_url: str | None) -> None:
    """Delete this worker's rate-limit counters: they are keyed by user id, and ids restart with every test."""
    if not redis_url:
        return
    # Short timeouts: some tests point the app at a Redis that accepts and never answers.
    store = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        keys = list(store.scan_iter(match=f"*test-rl:{RUN_ID}/*", count=1000))
        if keys:
            store.delete(*keys)
    except (redis.ConnectionError, redis.TimeoutError):  # tests that take Redis away check that themselves
        pass
    finally:
        store.close()


def delete_all_rows() -> None:
    """Empty every table with DELETE (faster than TRUNCATE between a property test's many examples)."""
    if db.engine.dialect.name == "postgresql":  # past the guards that keep issued invoices from being deleted
        db.session.execute(text("SET LOCAL session_replication_role = replica"))
    for table in reversed(data_tables()):
        db.session.execute(table.delete())
    db.session.commit()
    _seed_defaults()


@pytest.fixture
def make_app(backends, tmp_path):
    """Return a factory for apps on this worker's database, with config overrides."""
    made = []

    def factory(**overrides):
        instance = tmp_path / f"instance{len(made)}"
        app = create_app(app_config(backends["database_url"], backends["redis_url"], instance, **overrides))
        app.test_client_class = FreshContextClient
        made.append(app)
        return app

    yield factory
    for app in made:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


@contextmanager
def clean_context(app):
    """Push `app`'s context over an empty database and an empty cache."""
    from isp_admin.extensions import cache

    with app.app_context():
        truncate_all()
        cache.clear()
        forget_rate_limit_counters(app.config.get("REDIS_URL"))
        yield app
        db.session.rollback()


@pytest.fixture
def app(make_app, backends):
    """A testing app with an empty database and an empty cache; the app context is pushed."""
    with clean_context(make_app()) as app:
        yield app


@pytest.fixture
def client(app):
    """A test client."""
    return app.test_client()


@pytest.fixture
def runner(app):
    """A CLI runner."""
    return app.test_cli_runner()


@pytest.fixture
def login(client):
    """Create a user of `role` and sign `client` in as them; returns the user."""

    def sign_in(role: str = "admin", client_=None, **fields):
        user = factories.UserFactory(role=role, **fields)
        response = (client_ or client).post("/login", data={"email": user.email, "password": PASSWORD})
        assert response.status_code == 302, response.data[:500]
        return user

    return sign_in


@pytest.fixture
def query_counter(app):
    """Count SQL statements run inside a `with query_counter() as statements:` block."""

    @contextmanager
    def counting():
        statements: list[str] = []

        def record(_conn, _cursor, statement, *_args):
            statements.append(statement)

        event.listen(db.engine, "before_cursor_execute", record)
        try:
            yield statements
        finally:
            event.remove(db.engine, "before_cursor_execute", record)

    return counting


def is_postgres() -> bool:
    """Whether the current app runs on PostgreSQL."""
    return db.engine.dialect.name == "postgresql"


@pytest.fixture(scope="session")
def freeradius(backends, tmp_path_factory):
    """A real FreeRADIUS (deploy/freeradius config) on loopback ports, reading this worker's database.

    Started once per worker; in CI its absence fails the run (.ci/run installs it), elsewhere the tests skip.
    """
    from tests.support import radius

    if not radius.available() or not backends["database_url"].startswith("postgresql"):
        if CI:
            pytest.exit("FreeRADIUS (freeradius, freeradius-postgresql) is needed in CI", returncode=1)
        pytest.skip("FreeRADIUS with PostgreSQL is not available here")
    # Not under pytest's tmp dir: that is root's alone (0700), and FreeRADIUS runs as nobody.
    workdir = Path(tempfile.mkdtemp(prefix="isp-admin-freeradius-"))
    server = radius.FreeRadius(backends["database_url"], workdir).start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)

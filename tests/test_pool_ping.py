"""Pooled PostgreSQL connections are pinged only after sitting idle, and a dead one is replaced, never handed out."""
from __future__ import annotations

import pytest
from sqlalchemy import text

from isp_admin import database
from isp_admin.extensions import db
from tests.conftest import is_postgres


@pytest.fixture
def engine(app):
    if not is_postgres():
        pytest.skip("PostgreSQL connections only (SQLite keeps pool_pre_ping)")
    db.session.remove()
    return db.engine


def backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_a_connection_used_a_moment_ago_is_not_pinged_and_an_idle_one_is(engine, monkeypatch):
    pings = []
    real_ping = engine.dialect.do_ping
    monkeypatch.setattr(engine.dialect, "do_ping", lambda conn: pings.append(1) or real_ping(conn))
    backend_pid(engine)
    backend_pid(engine)
    backend_pid(engine)
    assert pings == []   # each checkout reused a connection checked in a moment before

    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)
    backend_pid(engine)
    assert pings == [1]


def test_an_idle_connection_killed_by_the_server_is_replaced_not_handed_out(engine, monkeypatch):
    victim, other = engine.connect(), engine.connect()
    first = victim.execute(text("SELECT pg_backend_pid()")).scalar_one()
    victim.close()   # back in the pool, first in line (FIFO)
    assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
    other.close()
    monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", 0.0)   # as after a second unused

    second = backend_pid(engine)   # would raise OperationalError if the dead connection were handed out

    assert second != first


def test_postgresql_engines_ping_when_idle_instead_of_on_every_checkout(engine):
    assert engine.pool._pre_ping is False  # noqa: SLF001  (the configured choice)


def _connections_opened_by_busy_threads(make_app, threads: int, **engine) -> tuple[int, int]:
    """Run `threads` threads that together take a pooled connection each, hold it ~5 ms (a list request's
    statements) and give it back, 25 rounds, on an app built with the shipped engine options (and `engine`);
    return (connections opened, the pool's kept size)."""
    import threading

    from sqlalchemy import event

    from isp_admin.config import engine_options

    options = {**engine_options(db.engine.url.render_as_string(hide_password=False), {}), **engine}
    busy = make_app(SQLALCHEMY_ENGINE_OPTIONS=options)
    with busy.app_context():
        pool_engine = db.engine
    opened = []
    event.listen(pool_engine, "connect", lambda *_: opened.append(1))
    start = threading.Barrier(threads)

    def stream():
        for _ in range(25):
            start.wait()  # all at once, then all idle: the load of a worker whose threads fill and drain together
            with pool_engine.connect() as conn:
                conn.execute(text("SELECT pg_sleep(0.005)"))

    workers = [threading.Thread(target=stream) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return len(opened), pool_engine.pool.size()


def test_busy_threads_reuse_kept_connections_rather_than_open_one_per_request(engine, make_app):
    opened, size = _connections_opened_by_busy_threads(make_app, threads=8)
    assert size == 10 and opened <= 8, "every thread kept a connection and reused it"
    # SQLAlchemy's default pool (5 kept) under the same load: whenever more than 5 were idle the extra ones were
    # closed, and opened again (a PostgreSQL backend started) when the threads got busy. This is what the default
    # above prevents (and shows the count can fail).
    churned, _ = _connections_opened_by_busy_threads(make_app, threads=8, pool_size=5)
    assert churned >= 8 + 3 * 20


def test_gunicorn_sizes_each_workers_pool_to_its_threads():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = "import os, runpy; runpy.run_path('deploy/gunicorn.conf.py'); print(os.environ['DATABASE_POOL_SIZE'])"
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_POOL_SIZE", "GUNICORN_THREADS")}

    def pool_size(**env) -> str:
        out = subprocess.run([sys.executable, "-c", code], cwd=root, env={**base, **env}, capture_output=True,
                             text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()[-1]

    assert pool_size() == "8"  # the default threads
    assert pool_size(GUNICORN_THREADS="12") == "12"
    assert pool_size(GUNICORN_THREADS="12", DATABASE_POOL_SIZE="3") == "3", "an operator's own setting wins"

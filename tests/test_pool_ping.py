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

"""List pages run without a transaction (no BEGIN, no ROLLBACK sent); everything else keeps its transaction."""
from __future__ import annotations

import psycopg
import pytest

from isp_admin.extensions import db
from tests.api.helpers import bearer
from tests.conftest import FreshContextClient, is_postgres
from tests.factories import CustomerFactory


@pytest.fixture
def sent(app, monkeypatch):
    """The transaction commands (BEGIN, COMMIT, ROLLBACK) psycopg sends to PostgreSQL, in order."""
    if not is_postgres():
        pytest.skip("autocommit reads are for PostgreSQL (SQLite keeps its transactions)")
    commands: list[str] = []
    real = psycopg.Connection._exec_command

    def exec_command(self, command, *args, **kwargs):
        commands.append(bytes(command).decode() if not isinstance(command, str) else command)
        return real(self, command, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "_exec_command", exec_command)
    return commands


@pytest.fixture
def fresh(app):
    """A client whose requests each get their own app context and session, as under a WSGI server."""
    app.test_client_class = FreshContextClient
    return app.test_client()


def transaction_commands(sent: list[str], request) -> list[str]:
    """Send `request` (a callable returning a response); return the transaction commands it caused."""
    sent.clear()
    response = request()
    assert response.status_code in (200, 304), response.data[:300]
    # After a connection has served in autocommit, BEGIN names the isolation level it was restored to.
    return [c.split()[0] for c in sent if c.split()[0] in ("BEGIN", "COMMIT", "ROLLBACK")]


def test_api_and_staff_lists_run_without_a_transaction_and_the_rest_within_one(app, fresh, login, sent):
    customer = CustomerFactory()
    api = bearer("admin", "read,write")
    db.session.commit()
    login("admin", client_=fresh)
    fresh.get("/api/customers/", headers=api)   # the token's once-a-minute last-used stamp, out of the way

    for path, headers in (("/api/customers/?page_size=5", api), ("/api/customers/?status=active", api),
                          ("/customers/", {}), ("/customers/?q=a", {}), ("/invoices/", {}), ("/payments/", {})):
        assert transaction_commands(sent, lambda p=path, h=headers: fresh.get(p, headers=h)) == [], path
    tag = fresh.get("/api/customers/", headers=api).headers["ETag"]
    assert transaction_commands(sent, lambda: fresh.get("/api/customers/", headers={**api, "If-None-Match": tag})) \
        == []

    assert "BEGIN" in transaction_commands(sent, lambda: fresh.get(f"/customers/{customer.id}"))
    assert "BEGIN" in transaction_commands(sent, lambda: fresh.get(f"/api/customers/{customer.id}/", headers=api))
    assert transaction_commands(sent, lambda: fresh.patch(f"/api/customers/{customer.id}/",
                                                          json={"phone": "+254700000001"}, headers=api))[:2] \
        == ["BEGIN", "COMMIT"]


def test_a_connection_goes_back_to_the_pool_with_its_transactions_restored(app, fresh, sent):
    api = bearer("readonly", "read")
    db.session.commit()
    db.session.remove()
    fresh.get("/api/customers/", headers=api)
    assert transaction_commands(sent, lambda: fresh.get("/api/customers/", headers=api)) == []

    with db.engine.connect() as conn:   # a pooled connection as the next request gets it
        assert conn.connection.dbapi_connection.autocommit is False
        conn.exec_driver_sql("SELECT 1")
        assert sent[-1].split()[0] == "BEGIN" and conn.get_isolation_level() == "READ COMMITTED"

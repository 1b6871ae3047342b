"""At 100,000 customers in PostgreSQL the list and search pages stay at a constant, small number of queries,
and search uses the trigram indexes."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import event, text

from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.services.customers import accounts as customer_service
from tests.conftest import (
    RUN_ID,
    FreshContextClient,
    _postgres_available,
    app_config,
    create_database,
    drop_database,
)
from tests.factories import PASSWORD, UserFactory

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not _postgres_available(), reason="needs PostgreSQL")]
CUSTOMERS = 100_000
MAX_QUERIES = 5
PAGES = [  # what staff do on the list page
    "/customers/?size=10", "/customers/?size=50", "/customers/?size=200",
    "/customers/?q=otieno", "/customers/?q=otieno+bak&size=200", "/customers/?q=100.64.",
    "/customers/?status=suspended", "/customers/?sort=newest&size=200", "/customers/?sort=account",
]


@pytest.fixture(scope="module")
def big_app(backends, tmp_path_factory):
    """An app on its own PostgreSQL database, migrated; yields (app, statements-by-page before loading)."""
    from flask_migrate import upgrade

    name = f"isp_admin_scale_{RUN_ID}"
    url = create_database(name)
    app = create_app(app_config(url, backends["redis_url"], tmp_path_factory.mktemp("scale")))
    app.test_client_class = FreshContextClient
    with app.app_context():
        upgrade(directory="migrations")
        from isp_admin.extensions import cache

        cache.clear()
        UserFactory(email="scale@isp.example", role="readonly")
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    drop_database(name)


def _count(app, client, url) -> tuple[int, bool]:
    """Return the SQL statements a page ran, and whether it listed any customer."""
    statements = []

    def record(*_args):
        statements.append(1)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get(url)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200, (url, response.status_code)
    return len(statements), b"table-customers" in response.data


def _signed_in(app):
    client = app.test_client()
    assert client.post("/login", data={"email": "scale@isp.example", "password": PASSWORD}).status_code == 302
    return client


def test_list_and_search_queries_stay_constant_from_50_to_100k(big_app, capsys):
    client = _signed_in(big_app)
    runner = big_app.test_cli_runner()
    assert runner.invoke(args=["data", "generate-test-data", "--customers", "50", "--seed", "1"]).exit_code == 0
    for url in PAGES:  # warm the caches (plan picker, unfiltered total) as a running server has them
        client.get(url)
    small = {url: _count(big_app, client, url) for url in PAGES}

    started = time.perf_counter()
    result = runner.invoke(args=["data", "generate-test-data", "--customers", str(CUSTOMERS - 50), "--seed", "3"])
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    with big_app.app_context():
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        assert db.session.scalar(text("SELECT count(*) FROM customers")) == CUSTOMERS
    for url in PAGES:
        client.get(url)
    large = {url: _count(big_app, client, url) for url in PAGES}

    with capsys.disabled():
        print(f"\n  loaded {CUSTOMERS:,} customers in {seconds:.1f}s; queries per page: {large}")
    assert all(n <= MAX_QUERIES and rows for n, rows in large.values()), large
    # An empty page skips the query for its subscriptions; otherwise 50 or 100,000 rows cost the same.
    comparable = [url for url in PAGES if small[url][1]]
    assert len(comparable) >= 5, small
    assert {u: large[u] for u in comparable} == {u: small[u] for u in comparable}, "count depends on table size"
    unfiltered = [large[u][0] for u in PAGES[:3]]
    assert len(set(unfiltered)) == 1, "the query count must not depend on the page size"


def _plan(app, q: str) -> str:
    statements = []

    def record(_conn, _cursor, statement, parameters, *_args):
        statements.append((statement, parameters))

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            customer_service.list_customers(q=q, size=50)
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        statement, parameters = statements[0]
        with db.engine.connect() as conn:
            cursor = conn.connection.dbapi_connection.cursor()
            cursor.execute("EXPLAIN " + statement, parameters)
            return "\n".join(row[0] for row in cursor.fetchall())


def test_selective_search_uses_the_trigram_indexes(big_app):
    plan = _plan(big_app, "otieno bak")
    assert "trgm_customers_search_text" in plan, plan
    assert "trgm_subscriptions_pppoe_username" in plan, plan
    pppoe = _plan(big_app, "c0000-1")
    assert "trgm_subscriptions_pppoe_username" in pppoe, pppoe

"""Data versions: PostgreSQL bumps a table's version once per committed transaction that writes it, and the
per-process cache keyed by those versions forgets the least recently used entry and never caches an unknown key.

Transactions are driven on connections of their own, so each test decides exactly what commits and when.
"""
from __future__ import annotations

from contextlib import contextmanager
from datetime import date, timedelta

import pytest
from sqlalchemy import insert, text

from isp_admin.extensions import db
from isp_admin.models import Plan, Subscription
from isp_admin.services.customers.accounts import create_customer, update_customer
from isp_admin.services.platform import versions
from isp_admin.services.platform.clock import today
from isp_admin.services.platform.versions import VersionedCache
from tests.conftest import is_postgres
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.support.billing import make_invoice, make_payment

TRACKED = ("customers", "subscriptions", "plans")
# Set-based bulk writes: one statement writes `n` rows, so "once per transaction" is tested on many rows.
ADD_CUSTOMERS = text("INSERT INTO customers (account_number, name, status, created_at, updated_at) "
                     "SELECT :prefix || lpad(g::text, 8, '0'), 'Bulk ' || g, 'active', now(), now() "
                     "FROM generate_series(1, :n) AS g")


@pytest.fixture(autouse=True)
def postgres_only(app):
    """The versions are kept by PostgreSQL triggers; SQLite has none."""
    if not is_postgres():
        pytest.skip("data versions are kept by PostgreSQL triggers")


def read_versions() -> dict[str, int]:
    """The committed version of every tracked table, read on a connection of its own."""
    with db.engine.connect() as conn:
        return dict(conn.execute(text("SELECT name, version FROM change_versions")).all())


@contextmanager
def transaction():
    """A connection in one transaction that commits when the block ends (and rolls back if it raises)."""
    with db.engine.connect() as conn, conn.begin():
        yield conn


def bumped(before: dict[str, int]) -> dict[str, int]:
    """How much each tracked table's version moved since `before`."""
    after = read_versions()
    return {name: after[name] - before[name] for name in TRACKED}


def customer_ids(conn, prefix: str) -> list[int]:
    return list(conn.scalars(text("SELECT id FROM customers WHERE account_number LIKE :p ORDER BY id"),
                             {"p": f"{prefix}%"}))


def test_the_tracked_tables_have_a_version_row_each():
    assert set(read_versions()) == set(TRACKED)


def test_one_committed_insert_of_one_customer_bumps_customers_once():
    before = read_versions()
    with transaction() as conn:
        conn.execute(ADD_CUSTOMERS, {"prefix": "A", "n": 1})
    assert bumped(before) == {"customers": 1, "subscriptions": 0, "plans": 0}


def test_many_rows_and_many_statements_in_one_transaction_bump_once():
    with transaction() as conn:
        conn.execute(ADD_CUSTOMERS, {"prefix": "M", "n": 300})
    before = read_versions()
    with transaction() as conn:
        conn.execute(ADD_CUSTOMERS, {"prefix": "N", "n": 500})
        conn.execute(text("UPDATE customers SET notes = 'x' WHERE account_number LIKE 'M%'"))
        ids = customer_ids(conn, "N")
        conn.execute(text("DELETE FROM customers WHERE id = ANY(:ids)"), {"ids": ids[:200]})
        for n in range(5):  # separate statements too, not only one statement's rows
            conn.execute(text("UPDATE customers SET name = :name WHERE id = :id"), {"name": f"One {n}", "id": ids[-1]})
    assert bumped(before) == {"customers": 1, "subscriptions": 0, "plans": 0}
    with db.engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM customers")) == 300 + 500 - 200


@pytest.mark.parametrize("write", ["update", "delete"])
def test_a_committed_update_or_delete_of_many_customers_bumps_once(write):
    with transaction() as conn:
        conn.execute(ADD_CUSTOMERS, {"prefix": "U", "n": 50})
    before = read_versions()
    with transaction() as conn:
        if write == "update":
            changed = conn.execute(text("UPDATE customers SET status = 'suspended'")).rowcount
        else:
            changed = conn.execute(text("DELETE FROM customers")).rowcount
    assert changed == 50
    assert bumped(before) == {"customers": 1, "subscriptions": 0, "plans": 0}


def test_each_committed_transaction_bumps_again():
    before = read_versions()
    for n in range(3):
        with transaction() as conn:
            conn.execute(ADD_CUSTOMERS, {"prefix": f"T{n}", "n": 2})
    assert bumped(before)["customers"] == 3


def test_a_statement_that_changes_no_row_does_not_bump():
    before = read_versions()
    with transaction() as conn:
        assert conn.execute(text("UPDATE customers SET notes = 'x' WHERE false")).rowcount == 0
        assert conn.execute(text("DELETE FROM customers WHERE id < 0")).rowcount == 0
    assert bumped(before) == {"customers": 0, "subscriptions": 0, "plans": 0}


def test_a_rolled_back_transaction_does_not_bump():
    before = read_versions()
    with db.engine.connect() as conn:
        conn.begin()
        conn.execute(ADD_CUSTOMERS, {"prefix": "R", "n": 20})
        conn.execute(text("UPDATE customers SET notes = 'x'"))
        conn.rollback()
    assert bumped(before) == {"customers": 0, "subscriptions": 0, "plans": 0}
    with db.engine.connect() as conn:
        assert customer_ids(conn, "R") == []


def test_a_failed_transaction_does_not_bump():
    before = read_versions()
    with pytest.raises(Exception, match="account_number"), transaction() as conn:
        conn.execute(ADD_CUSTOMERS, {"prefix": "D", "n": 3})
        conn.execute(ADD_CUSTOMERS, {"prefix": "D", "n": 3})  # the same account numbers: unique violation
    assert bumped(before)["customers"] == 0


def test_a_savepoint_rolled_back_inside_a_committed_writing_transaction_still_bumps():
    before = read_versions()
    with transaction() as conn:
        conn.execute(ADD_CUSTOMERS, {"prefix": "S", "n": 2})
        savepoint = conn.begin_nested()
        conn.execute(ADD_CUSTOMERS, {"prefix": "X", "n": 2})
        savepoint.rollback()
    assert bumped(before) == {"customers": 1, "subscriptions": 0, "plans": 0}
    with db.engine.connect() as conn:
        assert len(customer_ids(conn, "S")) == 2 and customer_ids(conn, "X") == []


def test_a_write_only_in_a_rolled_back_savepoint_bumps_nothing_because_nothing_changed():
    """The savepoint's rows never become visible, so no reader may see the table differ: no bump is needed."""
    before = read_versions()
    with transaction() as conn:
        savepoint = conn.begin_nested()
        conn.execute(ADD_CUSTOMERS, {"prefix": "X", "n": 2})
        savepoint.rollback()
        conn.execute(text("SELECT 1"))
    assert bumped(before)["customers"] == 0
    with db.engine.connect() as conn:
        assert customer_ids(conn, "X") == []


def test_a_write_after_a_rolled_back_savepoint_that_wrote_bumps_once():
    """As create_customer retries a colliding account number: the savepoint fails, the next insert commits."""
    before = read_versions()
    with transaction() as conn:
        savepoint = conn.begin_nested()
        conn.execute(ADD_CUSTOMERS, {"prefix": "X", "n": 2})
        savepoint.rollback()
        with conn.begin_nested():
            conn.execute(ADD_CUSTOMERS, {"prefix": "Y", "n": 1})
    assert bumped(before)["customers"] == 1
    with db.engine.connect() as conn:
        assert len(customer_ids(conn, "Y")) == 1


def test_the_service_writes_bump_once_per_commit_and_not_before_it():
    before = read_versions()
    customer = create_customer(name="Service Made")
    db.session.flush()
    assert bumped(before)["customers"] == 0  # flushed, not committed: other readers still see the old table
    db.session.commit()
    assert bumped(before)["customers"] == 1
    update_customer(customer.id, notes="changed")
    db.session.commit()
    assert bumped(before)["customers"] == 2


def test_an_open_writing_transaction_does_not_block_another_writer():
    """The bump happens at commit, so the version row is not held locked while a writer's transaction is open."""
    before = read_versions()
    with db.engine.connect() as slow:
        slow.begin()
        slow.execute(ADD_CUSTOMERS, {"prefix": "L", "n": 1})
        with transaction() as quick:
            quick.execute(text("SET LOCAL lock_timeout = '2s'"))  # a wait on `slow` fails here instead of hanging
            quick.execute(ADD_CUSTOMERS, {"prefix": "Q", "n": 1})
        assert bumped(before)["customers"] == 1
        slow.commit()
    assert bumped(before)["customers"] == 2


def test_truncate_bumps_at_once_and_its_rollback_undoes_the_bump():
    with transaction() as conn:
        conn.execute(ADD_CUSTOMERS, {"prefix": "K", "n": 3})
    before = read_versions()
    with db.engine.connect() as conn:
        conn.begin()
        conn.execute(text("TRUNCATE customers CASCADE"))
        conn.rollback()
    assert bumped(before)["customers"] == 0
    with transaction() as conn:
        conn.execute(text("TRUNCATE customers CASCADE"))
    assert bumped(before)["customers"] == 1


def test_truncate_cascading_from_customers_bumps_the_subscriptions_it_empties():
    SubscriptionFactory()
    before = read_versions()
    with transaction() as conn:
        conn.execute(text("TRUNCATE customers CASCADE"))
        assert conn.scalar(text("SELECT count(*) FROM subscriptions")) == 0
    moved = bumped(before)
    assert moved["customers"] == 1 and moved["subscriptions"] == 1 and moved["plans"] == 0


def add_subscriptions(conn, customer_id: int, plan_id: int, n: int) -> None:
    start = today()
    conn.execute(insert(Subscription.__table__), [
        {"customer_id": customer_id, "plan_id": plan_id, "status": "active", "start_date": start, "billing_day": 1,
         "next_bill_date": start + timedelta(days=30), "pppoe_username": f"v{n}.{i}"} for i in range(n)])


def add_plans(conn, n: int, prefix: str) -> None:
    conn.execute(insert(Plan.__table__), [
        {"code": f"{prefix}-{i}", "name": f"{prefix} {i}", "download_mbps": 10, "upload_mbps": 1,
         "monthly_price_cents": 1000 + i, "setup_fee_cents": 0, "tax_rate_bp": 0, "currency": "USD",
         "active": True} for i in range(n)])


@pytest.mark.parametrize("table", ["subscriptions", "plans"])
def test_subscriptions_and_plans_bump_their_own_version_only(table):
    customer, plan = CustomerFactory(), PlanFactory()
    customer_id, plan_id = customer.id, plan.id
    db.session.commit()

    def write(conn, n: int, prefix: str) -> None:
        if table == "subscriptions":
            add_subscriptions(conn, customer_id, plan_id, n)
        else:
            add_plans(conn, n, prefix)

    before = read_versions()
    with transaction() as conn:
        write(conn, 40, "P")
        conn.execute(text(f"UPDATE {table} SET updated_at = now()"))
        write(conn, 1, "Q")
    assert bumped(before) == {name: int(name == table) for name in TRACKED}

    with db.engine.connect() as conn:  # rolled back: no bump
        conn.begin()
        write(conn, 3, "R")
        conn.rollback()
    assert bumped(before) == {name: int(name == table) for name in TRACKED}

    with transaction() as conn:
        conn.execute(text(f"DELETE FROM {table} WHERE id <> :keep"), {"keep": plan_id})
    assert bumped(before)[table] == 2

    with transaction() as conn:
        conn.execute(text(f"TRUNCATE {table} CASCADE"))
    assert bumped(before)[table] == 3


def test_writing_invoices_and_payments_bumps_none_of_the_tracked_tables():
    customer = CustomerFactory()
    customer_id = customer.id
    before = read_versions()
    invoice = make_invoice(customer_id, "open", date(2026, 3, 1), 4900, 1)
    payment = make_payment(customer_id, 4900, "cash", date(2026, 3, 2))
    db.session.commit()
    # Settled as the ledger does it (the database checks at commit that amount paid equals the allocations).
    db.session.execute(text("INSERT INTO payment_allocations (payment_id, invoice_id, amount_cents, created_at) "
                            "VALUES (:payment, :invoice, 4900, now())"),
                       {"payment": payment["id"], "invoice": invoice["id"]})
    db.session.execute(text("UPDATE invoices SET amount_paid_cents = total_cents, status = 'paid', paid_at = now() "
                            "WHERE id = :id"), {"id": invoice["id"]})
    db.session.commit()
    assert bumped(before) == {"customers": 0, "subscriptions": 0, "plans": 0}


def test_the_key_changes_with_its_tables_versions_only():
    db.session.commit()  # a fresh transaction reads what others committed
    customers_key, plans_key = versions.key("customers"), versions.key("plans")
    both = versions.key("customers", "plans")
    assert customers_key is not None and plans_key is not None and both is not None
    assert versions.key("customers") == customers_key  # stable while nothing is written

    PlanFactory()  # commits a plan
    assert versions.key("customers") == customers_key
    assert versions.key("plans") != plans_key
    assert versions.key("customers", "plans") != both

    CustomerFactory()
    assert versions.key("customers") != customers_key
    assert versions.key("no_such_table") is None
    assert versions.key("customers", "no_such_table") is None


def test_the_key_names_the_database():
    db.session.commit()
    url = db.engine.url
    assert versions.key("customers")[:3] == (url.host, url.port, url.database)


def test_the_module_cache_is_keyed_apart_per_version():
    """Two keys that differ only by version never share an entry (what makes a write invalidate the lists)."""
    versions.cache.clear()
    db.session.commit()
    first = versions.key("customers")
    versions.cache.put(("test.figure", *first), "old")
    CustomerFactory()
    second = versions.key("customers")
    assert versions.cache.get(("test.figure", *second)) is None
    assert versions.cache.get(("test.figure", *first)) == "old"


class TestTheCacheAlone:
    """The LRU itself, without a database (these run on SQLite too)."""

    @pytest.fixture(autouse=True)
    def postgres_only(self):
        """Needs no database: overrides the module's PostgreSQL check."""

    def test_the_cache_evicts_the_least_recently_used_entry(self):
        cache = VersionedCache(size=2)
        cache.put("a", 1)
        cache.put("b", 2)
        assert cache.get("a") == 1  # now "b" is the least recently used
        cache.put("c", 3)
        assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
        cache.put("d", 4)  # "a" was read before "c", so "a" goes
        assert (cache.get("a"), cache.get("c"), cache.get("d")) == (None, 3, 4)

    def test_putting_an_existing_key_refreshes_it_without_growing_the_cache(self):
        cache = VersionedCache(size=2)
        cache.put("a", 1)
        cache.put("b", 2)
        cache.put("a", 10)
        cache.put("c", 3)
        assert (cache.get("a"), cache.get("b"), cache.get("c")) == (10, None, 3)

    def test_get_or_compute_computes_once_per_key_and_never_caches_a_none_key(self):
        cache = VersionedCache(size=4)
        calls: list[str] = []

        def compute(label: str):
            def run():
                calls.append(label)
                return {"total": len(calls)}
            return run

        assert cache.get_or_compute(("k", 1), compute("k1")) == {"total": 1}
        assert cache.get_or_compute(("k", 1), compute("k1")) == {"total": 1}
        assert cache.get_or_compute(("k", 2), compute("k2")) == {"total": 2}
        assert cache.get_or_compute(None, compute("none")) == {"total": 3}
        assert cache.get_or_compute(None, compute("none")) == {"total": 4}
        assert calls == ["k1", "k2", "none", "none"]
        assert cache.get(None) is None

    def test_clear_forgets_everything(self):
        cache = VersionedCache()
        cache.put(("x",), 1)
        cache.clear()
        assert cache.get(("x",)) is None

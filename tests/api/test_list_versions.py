"""The customer list on PostgreSQL: ETags from data versions (304 after one statement), page anchors that give
exactly what OFFSET would, anchors recomputed after a write, and a fixed statement budget at any depth.

Expected pages come from a plain `ORDER BY <column>, id OFFSET … LIMIT …` over the same filter, never from the
code under test.
"""
from __future__ import annotations

import random
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import insert, text

from isp_admin.extensions import db
from isp_admin.models import Customer
from isp_admin.models.customers import CUSTOMER_STATUSES
from isp_admin.services.customers import accounts as customers
from isp_admin.services.customers.accounts import create_customer, update_customer
from isp_admin.services.platform import versions
from tests.api.helpers import bearer
from tests.conftest import is_postgres
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory

URL = "/api/customers/"
# ?ordering= → (column, descending), as the API promises: ties broken by id in the same direction.
ORDERINGS = {"name": ("name", False), "-name": ("name", True), "id": ("id", False), "-id": ("id", True),
             "account_number": ("account_number", False), "-account_number": ("account_number", True),
             "status": ("status", False), "-status": ("status", True)}
# Duplicates, case and accents, trailing spaces, and a prefix of another name: ties everywhere.
NAMES = ["Ann", "Ann", "ann", "Ann ", "Anna", "Bob", "Bob", "Bob", "bob", "Émile", "Zoë", "Zoe", "Ann", "Bob"]


@pytest.fixture(autouse=True)
def postgres_only(app):
    """Versions, ETags and page anchors are PostgreSQL's; SQLite lists the plain way."""
    if not is_postgres():
        pytest.skip("data versions, ETags and page anchors are PostgreSQL only")


@pytest.fixture
def headers():
    """A readonly user's read token."""
    return bearer("readonly", "read")


def add_customers(count: int, *, seed: int, prefix: str = "V", names=NAMES) -> None:
    """Insert `count` customers in one statement: names from `names`, every status, account numbers shuffled."""
    rng = random.Random(seed)
    numbers = rng.sample(range(10**7), count)  # account order unrelated to id order
    statuses = ["active"] * 5 + ["suspended"] * 3 + ["closed"] * 2
    rows = [{"account_number": f"{prefix}{numbers[n]:08d}", "name": rng.choice(names), "status": rng.choice(statuses)}
            for n in range(count)]
    db.session.execute(insert(Customer.__table__), rows)
    db.session.commit()


def add_bulk(count: int, start: int = 0) -> None:
    """Insert `count` customers set-based in PostgreSQL, for the larger tables of the statement budget."""
    db.session.execute(text(
        "INSERT INTO customers (account_number, name, status, created_at, updated_at) "
        "SELECT 'B' || lpad(g::text, 8, '0'), 'Bulk ' || (g % 97), "
        "(ARRAY['active', 'active', 'suspended', 'closed'])[1 + g % 4], now(), now() "
        "FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g"),
        {"first": start + 1, "last": start + count})
    db.session.commit()


def by_offset(ordering: str, status: str | None, offset: int, limit: int) -> list[int]:
    """The ids of one page by plain OFFSET, the reference every anchored page must equal."""
    column, descending = ORDERINGS[ordering]
    direction = "DESC" if descending else "ASC"
    where = "WHERE status = :status" if status else ""
    return list(db.session.scalars(text(
        f"SELECT id FROM customers {where} ORDER BY {column} {direction}, id {direction} "  # noqa: S608 (fixed names)
        "OFFSET :offset LIMIT :limit"), {"status": status, "offset": offset, "limit": limit}))


def count_where(status: str | None) -> int:
    where = "WHERE status = :status" if status else ""
    return db.session.scalar(text(f"SELECT count(*) FROM customers {where}"), {"status": status})  # noqa: S608


def page_url(ordering: str, status: str | None, size: int, page: int) -> str:
    status_part = f"&status={status}" if status else ""
    return f"{URL}?ordering={ordering}{status_part}&page_size={size}&page={page}"


def get_page(client, headers, url: str) -> dict:
    response = client.get(url, headers=headers)
    assert response.status_code == 200, (url, response.data[:300])
    return response.get_json()


def assert_page_is_offset(client, headers, ordering: str, status: str | None, size: int, page: int,
                          total: int) -> None:
    """Assert one API page equals the OFFSET page, with a pagination block that is right at both ends."""
    url = page_url(ordering, status, size, page)
    body = get_page(client, headers, url)
    expected = by_offset(ordering, status, (page - 1) * size, size)
    assert [row["id"] for row in body["data"]] == expected, url
    pagination = body["pagination"]
    pages = max(1, -(-total // size))
    assert (pagination["page"], pagination["total"], pagination["pages"]) == (page, total, pages), url
    assert (pagination["next"] is None) == (page >= pages), url
    assert (pagination["previous"] is None) == (page == 1), url
    if pagination["next"]:
        assert parse_qs(urlsplit(pagination["next"]).query)["page"] == [str(page + 1)], url
    if pagination["previous"]:
        assert parse_qs(urlsplit(pagination["previous"]).query)["page"] == [str(min(page - 1, pages))], url


def every_page_is_offset(client, headers, orderings, statuses, sizes) -> int:
    """Walk every page (and one past the end) of each combination; return how many pages were compared."""
    compared = 0
    for ordering in orderings:
        for status in statuses:
            total = count_where(status)
            for size in sizes:
                pages = max(1, -(-total // size))
                for page in range(1, pages + 2):
                    assert_page_is_offset(client, headers, ordering, status, size, page, total)
                    compared += 1
    return compared


@pytest.fixture
def small_steps(monkeypatch):
    """Anchors every third row, so a 40-row list has a dozen of them to get wrong."""
    monkeypatch.setattr(customers, "MIN_ANCHOR_STEP", 3)
    monkeypatch.setattr(customers, "ANCHORS_PER_LIST", 10**6)
    versions.cache.clear()  # anchors made with the normal step must not be reused
    yield
    versions.cache.clear()


# --- ETags and 304 --------------------------------------------------------------------------------------------

@pytest.fixture
def listed_customers():
    """Twelve customers, enough for three pages of five."""
    add_customers(12, seed=1)


def assert_conditional_headers(response, etag: str | None = None) -> str:
    tag = response.headers.get("ETag")
    assert tag and tag.startswith('"') and tag.endswith('"'), response.headers
    if etag is not None:
        assert tag == etag
    assert response.headers["Cache-Control"] == "private, no-cache"
    assert "Authorization" in response.headers["Vary"]
    return tag


def test_an_unchanged_page_answers_304_after_only_the_token_query(client, headers, listed_customers,
                                                                   query_counter):
    first = client.get(f"{URL}?page=1", headers=headers)
    assert first.status_code == 200 and len(first.get_json()["data"]) == 12
    etag = assert_conditional_headers(first)

    with query_counter() as statements:
        again = client.get(f"{URL}?page=1", headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.data == b""
    assert_conditional_headers(again, etag)
    assert len(statements) == 1, statements
    assert "change_versions" in statements[0] and "api_tokens" in statements[0]

    other = client.get(f"{URL}?page=1", headers={**headers, "If-None-Match": '"not-the-tag"'})
    assert other.status_code == 200 and other.get_json()["data"] == first.get_json()["data"]
    assert_conditional_headers(other, etag)


@pytest.mark.parametrize("write", ["api create", "api update", "service create", "service update"])
def test_a_committed_customer_write_changes_the_etag_and_the_data(client, headers, listed_customers, write):
    url = f"{URL}?page=1&page_size=50"
    first = client.get(url, headers=headers)
    etag = assert_conditional_headers(first)
    some_id = first.get_json()["data"][0]["id"]
    writer = bearer("support", "read,write")
    if write == "api create":
        response = client.post(URL, json={"name": "Aaron Newcomer"}, headers=writer)
        assert response.status_code == 201
        changed_id = response.get_json()["data"]["id"]
    elif write == "api update":
        response = client.patch(f"{URL}{some_id}/", json={"name": "Aaron Renamed"}, headers=writer)
        assert response.status_code == 200
        changed_id = some_id
    elif write == "service create":
        changed_id = create_customer(name="Aaron Newcomer").id
        db.session.commit()
    else:
        update_customer(some_id, name="Aaron Renamed")
        db.session.commit()
        changed_id = some_id

    after = client.get(url, headers={**headers, "If-None-Match": etag})
    assert after.status_code == 200
    new_tag = assert_conditional_headers(after)
    assert new_tag != etag
    rows = after.get_json()["data"]
    assert rows[0]["id"] == changed_id and rows[0]["name"].startswith("Aaron")  # first by name, new data
    assert client.get(url, headers={**headers, "If-None-Match": new_tag}).status_code == 304


def test_a_write_that_is_not_committed_or_fails_keeps_the_etag(client, headers, listed_customers):
    url = f"{URL}?page=1"
    etag = client.get(url, headers=headers).headers["ETag"]
    some_id = client.get(url, headers=headers).get_json()["data"][0]["id"]
    writer = bearer("support", "read,write")
    assert client.patch(f"{URL}{some_id}/", json={"name": ""}, headers=writer).status_code == 422
    assert client.patch(f"{URL}{some_id}/", json={"email": "x" * 300}, headers=writer).status_code == 422
    with db.engine.connect() as conn:  # an open transaction's rows are invisible, so the list is unchanged
        conn.begin()
        conn.execute(text("UPDATE customers SET name = 'Uncommitted'"))
        assert client.get(url, headers={**headers, "If-None-Match": etag}).status_code == 304
        conn.rollback()
    assert client.get(url, headers={**headers, "If-None-Match": etag}).status_code == 304


def test_a_flushed_write_that_is_rolled_back_keeps_the_etag(client, headers, listed_customers):
    url = f"{URL}?page=1"
    first = client.get(url, headers=headers)
    update_customer(first.get_json()["data"][0]["id"], name="Rolled Back")
    db.session.flush()
    db.session.rollback()
    assert client.get(url, headers={**headers, "If-None-Match": first.headers["ETag"]}).status_code == 304


def test_a_plan_filtered_list_changes_when_a_subscription_is_added(client, headers):
    """?plan_id= lists customers by their subscriptions: a new subscription changes the list, not the customer."""
    customer, plan = CustomerFactory(name="Already Active"), PlanFactory()
    customer_id, url = customer.id, f"{URL}?plan_id={plan.id}"
    first = client.get(url, headers=headers)
    assert first.status_code == 200 and first.get_json()["data"] == []
    admin = bearer("admin", "read,write")
    added = client.post("/api/subscriptions/", json={"customer_id": customer_id, "plan_id": plan.id},
                        headers=admin)
    assert added.status_code == 201, added.data[:300]

    fresh = client.get(url, headers=headers)
    assert [row["id"] for row in fresh.get_json()["data"]] == [customer_id]
    assert fresh.get_json()["pagination"]["total"] == 1
    assert fresh.headers["ETag"] != first.headers["ETag"]
    conditional = client.get(url, headers={**headers, "If-None-Match": first.headers["ETag"]})
    assert conditional.status_code == 200


def test_a_search_by_login_changes_when_the_login_changes(client, headers):
    """?search= matches PPPoE logins, which live on subscriptions."""
    sub = SubscriptionFactory(pppoe_username="old.login")
    customer_id, sub_id, url = sub.customer_id, sub.id, f"{URL}?search=new.login"
    first = client.get(url, headers=headers)
    assert first.status_code == 200 and first.get_json()["data"] == []
    admin = bearer("admin", "read,write")
    renamed = client.patch(f"/api/subscriptions/{sub_id}/", json={"pppoe_username": "new.login"}, headers=admin)
    assert renamed.status_code == 200, renamed.data[:300]

    fresh = client.get(url, headers=headers)
    assert [row["id"] for row in fresh.get_json()["data"]] == [customer_id]
    assert fresh.get_json()["pagination"]["total"] == 1
    conditional = client.get(url, headers={**headers, "If-None-Match": first.headers["ETag"]})
    assert conditional.status_code == 200


def test_writes_to_plans_or_users_keep_the_customer_list_etag(client, headers, listed_customers):
    url = f"{URL}?page=1"
    etag = client.get(url, headers=headers).headers["ETag"]
    PlanFactory()
    UserFactory()
    assert client.get(url, headers={**headers, "If-None-Match": etag}).status_code == 304


def test_an_etag_belongs_to_its_exact_query(client, headers, listed_customers):
    tags = {}
    for query in ("page=1&page_size=5", "page=2&page_size=5", "page=1&page_size=6", "page=1&page_size=5&ordering=-id",
                  "page=1&page_size=5&status=active"):
        tags[query] = client.get(f"{URL}?{query}", headers=headers).headers["ETag"]
    assert len(set(tags.values())) == len(tags), tags
    response = client.get(f"{URL}?page=2&page_size=5", headers={**headers, "If-None-Match": tags["page=1&page_size=5"]})
    assert response.status_code == 200 and len(response.get_json()["data"]) == 5
    assert response.headers["ETag"] == tags["page=2&page_size=5"]


def test_another_token_of_the_same_role_gets_the_same_answer(client, headers, listed_customers):
    other = bearer("readonly", "read")
    first = client.get(f"{URL}?page=1", headers=headers)
    second = client.get(f"{URL}?page=1", headers=other)
    assert second.status_code == 200 and second.headers["ETag"] == first.headers["ETag"]
    assert second.get_json()["data"] == first.get_json()["data"]
    again = client.get(f"{URL}?page=1", headers={**other, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert_conditional_headers(again, first.headers["ETag"])


def test_an_etag_never_answers_for_a_request_that_is_not_authenticated(client, headers, listed_customers):
    etag = client.get(f"{URL}?page=1", headers=headers).headers["ETag"]
    for auth in ({}, {"Authorization": "Bearer ispa_not-a-token"}):
        response = client.get(f"{URL}?page=1", headers={**auth, "If-None-Match": etag})
        assert response.status_code == 401 and response.get_json()["success"] is False


@pytest.mark.parametrize("if_none_match", ['"other", {tag}', "W/{tag}", "*"])
def test_if_none_match_lists_weak_tags_and_star_match_as_http_says(client, headers, listed_customers,
                                                                   if_none_match):
    """RFC 9110 §13.1.2: If-None-Match compares weakly (a gzipping proxy makes the tag weak) and * matches."""
    etag = client.get(f"{URL}?page=1", headers=headers).headers["ETag"]
    response = client.get(f"{URL}?page=1", headers={**headers, "If-None-Match": if_none_match.format(tag=etag)})
    assert response.status_code == 304


# --- anchors give exactly the OFFSET page ----------------------------------------------------------------------

def test_the_anchors_are_every_third_row(small_steps):
    add_customers(40, seed=2)
    stats = customers._anchors(None, "name", False)
    assert (stats["total"], stats["step"]) == (40, 3)
    expected = [by_offset("name", None, n, 1)[0] for n in range(0, 40, 3)]
    assert [row_id for _value, row_id in stats["anchors"]] == expected


def test_every_page_of_every_ordering_and_status_equals_offset(client, headers, small_steps):
    add_customers(40, seed=3)
    assert {count_where(status) > 3 for status in CUSTOMER_STATUSES} == {True}  # every status has several rows
    compared = every_page_is_offset(client, headers, ORDERINGS, [None, *CUSTOMER_STATUSES], (1, 2, 5, 7))
    assert compared > 1000


def test_a_deep_page_starts_from_an_anchor_not_from_the_first_row(client, headers, small_steps, query_counter):
    add_customers(40, seed=4)
    get_page(client, headers, page_url("name", None, 5, 1))  # warms the token stamp and the anchors
    with query_counter() as first_page:
        get_page(client, headers, page_url("name", None, 5, 1))
    with query_counter() as deep_page:
        get_page(client, headers, page_url("name", None, 5, 7))
    anchored = "(c.name, c.id) >="  # the page statement (written as text) starts at an anchor
    assert not any(anchored in statement for statement in first_page), first_page
    assert any(anchored in statement for statement in deep_page), deep_page


def test_after_a_write_in_the_middle_the_next_request_gives_the_shifted_page(client, headers, small_steps):
    add_customers(40, seed=5, names=["Ann", "Ann", "Zed", "Zed", "Zed"])
    orderings, statuses, sizes = ("name", "-name", "status", "-id"), (None, "active"), (2, 5)
    every_page_is_offset(client, headers, orderings, statuses, sizes)  # the anchors are cached now
    deep = page_url("name", None, 5, 6)
    etag = client.get(deep, headers=headers).headers["ETag"]

    # Rows between "Ann" and "Zed" in one transaction: every page after the first few moves by four rows.
    add_customers(4, seed=6, prefix="M", names=["Mid", "Mid", "Ann ", "Mia"])
    moved = client.get(deep, headers={**headers, "If-None-Match": etag})
    assert moved.status_code == 200
    every_page_is_offset(client, headers, orderings, statuses, sizes)

    # A rename moves a row from the end to the start; a delete closes a gap; a status change moves between lists.
    last_id = by_offset("name", None, count_where(None) - 1, 1)[0]
    update_customer(last_id, name="Aaa")
    db.session.commit()
    every_page_is_offset(client, headers, orderings, statuses, sizes)
    db.session.execute(text("DELETE FROM customers WHERE id = :id"), {"id": by_offset("name", None, 20, 1)[0]})
    db.session.execute(text("UPDATE customers SET status = 'closed' WHERE id IN (SELECT id FROM customers "
                            "WHERE status = 'active' ORDER BY name, id LIMIT 3)"))
    db.session.commit()
    every_page_is_offset(client, headers, orderings, statuses, sizes)


# --- the statement budget --------------------------------------------------------------------------------------

def statements_of(app, client, headers, query_counter, url: str, *, cold: bool) -> tuple[int, dict]:
    """Count the statements of one GET, with the versioned cache emptied first or kept warm."""
    client.get(url, headers=headers)  # the token's last-use stamp is written at most once a minute, not here
    if cold:
        versions.cache.clear()
    with app.app_context(), query_counter() as statements:
        response = client.get(url, headers=headers)
    assert response.status_code == 200, response.data[:300]
    return len(statements), response.get_json()


@pytest.mark.parametrize("rows", [200, 5000])
def test_a_list_runs_three_statements_cold_and_two_warm_at_any_depth(app, client, headers, query_counter, rows):
    add_bulk(rows)
    total = {None: rows, "suspended": count_where("suspended")}
    urls = []
    for ordering in ("name", "-account_number"):
        for status in (None, "suspended"):
            last = -(-total[status] // 50)
            urls += [(ordering, status, 1), (ordering, status, last), (ordering, status, max(1, last // 2))]
    searches = ["search=bulk", "search=bulk%2012&status=active", "search=B0000&ordering=-id", "search=nobody"]
    counts = {}
    for ordering, status, page in urls:
        url = page_url(ordering, status, 50, page)
        for cold in (True, False):
            seen, body = statements_of(app, client, headers, query_counter, url, cold=cold)
            counts[(url, cold)] = seen
            assert [row["id"] for row in body["data"]] == by_offset(ordering, status, (page - 1) * 50, 50), url
            assert body["pagination"]["total"] == total[status]
    for query in searches:
        for page in (1, 3):
            url = f"{URL}?{query}&page_size=50&page={page}"
            for cold in (True, False):
                counts[(url, cold)] = statements_of(app, client, headers, query_counter, url, cold=cold)[0]
    assert {seen for (_url, cold), seen in counts.items() if cold} <= {2, 3}, counts
    assert max(seen for (_url, cold), seen in counts.items() if cold) == 3, counts
    assert {seen for (_url, cold), seen in counts.items() if not cold} == {2}, counts

"""The five API lists: filters, ordering, page and cursor walks, page links, ETags and a constant query count.

Expected rows are computed in Python from the records each test writes, never by the query under test.
"""
from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import insert

from isp_admin.extensions import db
from isp_admin.models import Customer, Plan, Subscription
from isp_admin.services.customers.accounts import invalidate_customer_totals
from isp_admin.services.platform.clock import today
from tests.api.helpers import assert_error, bearer
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.support.billing import make_invoice, make_payment

NAMES = ["Alpha", "Bravo", "Bravo", "Charlie", "Delta", "Echo", "Echo", "Foxtrot", "Golf", "Hotel", "India",
         "Juliet"]
LISTS = {"customers": "/api/customers/", "subscriptions": "/api/subscriptions/", "plans": "/api/plans/",
         "invoices": "/api/billing/invoices/", "payments": "/api/billing/payments/"}
CURSOR_LISTS = [name for name in LISTS if name != "plans"]
TOTALS = [1000, 2500, 1000, 4000, 2500, 700, 1000, 9900, 2500, 700, 4000, 1000, 300, 2500, 1000]
AMOUNTS = [500, 500, 1200, 80, 500, 3000, 1200, 80, 500, 7000, 1200, 500]
METHODS = ["cash", "card", "bank_transfer", "mobile_money"]


@pytest.fixture
def headers():
    """A readonly user's read token."""
    return bearer("readonly", "read")


@pytest.fixture
def world():
    """Twelve customers with subscriptions, fifteen invoices and twelve payments, with ties in every sort key."""
    base = today()
    plans = [PlanFactory.build(code=f"LIST-{n}") for n in range(3)]
    models = []
    for n, name in enumerate(NAMES):
        created = datetime.combine(base - timedelta(days=n), datetime.min.time(), UTC) + timedelta(hours=12)
        models.append(CustomerFactory.build(name=name, status=("active", "active", "suspended", "closed")[n % 4],
                                            email=f"{name.lower()}{n}@mail.example", phone=f"+254 711 {n:06d}",
                                            created_at=created))
    subs = [SubscriptionFactory.build(
        customer=models[n % len(models)], plan=plans[n % 3],
        status=("active", "pending", "suspended", "cancelled")[n % 4],
        suspension_reason="manual" if n % 4 == 2 else None, start_date=base - timedelta(days=10 * (n % 7)),
        end_date=base if n % 4 == 3 else None, next_bill_date=base + timedelta(days=n % 5),
        pppoe_username=f"{'fiber' if n % 3 else 'dsl'}.user{n}", static_ip=f"10.9.{n}.1" if n % 2 else None)
        for n in range(18)]
    db.session.add_all([*plans, *models, *subs])
    db.session.flush()  # one round of inserts instead of a commit per record
    customers = [{"id": c.id, "name": c.name, "status": c.status, "account_number": c.account_number,
                  "email": c.email, "phone": c.phone, "created": c.created_at.date()} for c in models]
    subscriptions = [{"id": s.id, "customer_id": s.customer_id, "plan_id": s.plan_id, "status": s.status,
                      "start_date": s.start_date, "next_bill_date": s.next_bill_date,
                      "pppoe_username": s.pppoe_username, "static_ip": s.static_ip} for s in subs]
    invoices = [make_invoice(customers[n % 5]["id"], ("draft", "open", "overdue", "paid", "void")[n % 5],
                             base - timedelta(days=3 * n), TOTALS[n], n) for n in range(len(TOTALS))]
    payments = [make_payment(customers[n % 4]["id"], AMOUNTS[n], METHODS[n % 4], base - timedelta(days=2 * n),
                             reversed_=n % 5 == 4) for n in range(len(AMOUNTS))]
    db.session.commit()
    return {"plans": [p.id for p in plans], "customers": customers, "subscriptions": subscriptions,
            "invoices": invoices, "payments": payments}


def listed(client, url: str, headers) -> list[int]:
    """The ids of one page of at most 200 rows, in the order the API gives them."""
    joiner = "&" if "?" in url else "?"
    response = client.get(f"{url}{joiner}page_size=200", headers=headers)
    assert response.status_code == 200, response.data[:500]
    body = response.get_json()
    assert body["pagination"]["total"] == len(body["data"])
    return [row["id"] for row in body["data"]]


def ids_where(rows: list[dict], keep) -> set[int]:
    return {row["id"] for row in rows if keep(row)}


def in_order(rows: list[dict], key: str, descending: bool = False) -> list[int]:
    """Row ids sorted as the API promises: by `key`, ties broken by id, both in the same direction."""
    return [row["id"] for row in sorted(rows, key=lambda row: (row[key], row["id"]), reverse=descending)]


# --- filters and ordering ---------------------------------------------------------------------------------------

def customer_filters(world) -> list[tuple[str, set[int]]]:
    c, s = world["customers"], world["subscriptions"]
    day = c[3]["created"]
    live_on_plan = {sub["customer_id"] for sub in s if sub["plan_id"] == world["plans"][1]
                    and sub["status"] != "cancelled"}
    by_login = {sub["customer_id"] for sub in s if "dsl" in sub["pppoe_username"]}
    return [
        ("status=suspended", ids_where(c, lambda r: r["status"] == "suspended")),
        ("status=closed", ids_where(c, lambda r: r["status"] == "closed")),
        ("search=echo", ids_where(c, lambda r: r["name"] == "Echo")),
        ("search=ECHO5%40mail", ids_where(c, lambda r: r["email"].startswith("echo5@"))),
        (f"search={c[7]['account_number'].lower()}", {c[7]["id"]}),
        ("search=711%20000004", {c[4]["id"]}),
        ("search=dsl.", by_login),
        ("search=10.9.5.1", {s[5]["customer_id"]}),
        ("search=%25", set()),
        ("search=_", set()),
        (f"plan_id={world['plans'][1]}", live_on_plan),
        (f"created_from={day.isoformat()}", ids_where(c, lambda r: r["created"] >= day)),
        (f"created_to={day.isoformat()}", ids_where(c, lambda r: r["created"] <= day)),
        (f"created_from={day.isoformat()}&created_to={day.isoformat()}", {c[3]["id"]}),
        ("status=active&search=bravo", ids_where(c, lambda r: r["status"] == "active" and r["name"] == "Bravo")),
    ]


def subscription_filters(world) -> list[tuple[str, set[int]]]:
    s, c = world["subscriptions"], world["customers"]
    day = s[0]["start_date"] - timedelta(days=30)
    return [
        ("status=pending", ids_where(s, lambda r: r["status"] == "pending")),
        ("status=cancelled", ids_where(s, lambda r: r["status"] == "cancelled")),
        (f"customer_id={c[1]['id']}", ids_where(s, lambda r: r["customer_id"] == c[1]["id"])),
        (f"plan_id={world['plans'][2]}", ids_where(s, lambda r: r["plan_id"] == world["plans"][2])),
        ("search=DSL", ids_where(s, lambda r: r["pppoe_username"].startswith("dsl"))),
        ("search=10.9.1", ids_where(s, lambda r: (r["static_ip"] or "").startswith("10.9.1"))),
        (f"started_from={day.isoformat()}", ids_where(s, lambda r: r["start_date"] >= day)),
        (f"started_to={day.isoformat()}", ids_where(s, lambda r: r["start_date"] <= day)),
        (f"status=active&plan_id={world['plans'][0]}",
         ids_where(s, lambda r: r["status"] == "active" and r["plan_id"] == world["plans"][0])),
    ]


def invoice_filters(world) -> list[tuple[str, set[int]]]:
    i, c = world["invoices"], world["customers"]
    day = i[4]["issue_date"]
    due = i[6]["due_date"]
    return [
        ("status=overdue", ids_where(i, lambda r: r["status"] == "overdue")),
        ("status=draft", ids_where(i, lambda r: r["status"] == "draft")),
        (f"customer={c[2]['id']}", ids_where(i, lambda r: r["customer_id"] == c[2]["id"])),
        (f"customer={c[3]['account_number'].lower()}", ids_where(i, lambda r: r["customer_id"] == c[3]["id"])),
        ("customer=C99999999", set()),
        (f"search={i[7]['number']}", {i[7]["id"]}),
        (f"search={i[7]['number'][-4:]}", ids_where(i, lambda r: i[7]["number"][-4:] in (r["number"] or ""))),
        (f"issued_from={day.isoformat()}", ids_where(i, lambda r: r["issue_date"] >= day)),
        (f"issued_to={day.isoformat()}", ids_where(i, lambda r: r["issue_date"] <= day)),
        (f"due_from={due.isoformat()}&due_to={(due + timedelta(days=6)).isoformat()}",
         ids_where(i, lambda r: due <= r["due_date"] <= due + timedelta(days=6))),
        ("min_total_cents=2500", ids_where(i, lambda r: r["total_cents"] >= 2500)),
        ("max_total_cents=1000", ids_where(i, lambda r: r["total_cents"] <= 1000)),
        ("min_total_cents=1000&max_total_cents=2500", ids_where(i, lambda r: 1000 <= r["total_cents"] <= 2500)),
        ("status=open&min_total_cents=1000", ids_where(i, lambda r: r["status"] == "open"
                                                       and r["total_cents"] >= 1000)),
    ]


def payment_filters(world) -> list[tuple[str, set[int]]]:
    p, c = world["payments"], world["customers"]
    day = p[5]["received_on"]
    return [
        ("method=card", ids_where(p, lambda r: r["method"] == "card")),
        ("status=reversed", ids_where(p, lambda r: r["status"] == "reversed")),
        (f"customer={c[1]['id']}", ids_where(p, lambda r: r["customer_id"] == c[1]["id"])),
        (f"customer={c[2]['account_number']}", ids_where(p, lambda r: r["customer_id"] == c[2]["id"])),
        (f"received_from={day.isoformat()}", ids_where(p, lambda r: r["received_on"] >= day)),
        (f"received_to={day.isoformat()}", ids_where(p, lambda r: r["received_on"] <= day)),
        ("min_amount_cents=1200", ids_where(p, lambda r: r["amount_cents"] >= 1200)),
        ("max_amount_cents=500", ids_where(p, lambda r: r["amount_cents"] <= 500)),
        ("method=cash&min_amount_cents=500&max_amount_cents=500",
         ids_where(p, lambda r: r["method"] == "cash" and r["amount_cents"] == 500)),
    ]


FILTERS = {"customers": customer_filters, "subscriptions": subscription_filters, "invoices": invoice_filters,
           "payments": payment_filters}


@pytest.mark.parametrize("name", list(FILTERS))
def test_each_filter_returns_exactly_the_matching_rows(client, headers, world, name):
    cases = FILTERS[name](world)
    for query, expected in cases:
        got = listed(client, f"{LISTS[name]}?{query}", headers)
        assert len(got) == len(set(got)), query
        assert set(got) == expected, query
        # A filter that keeps every row, or that nothing tests, proves nothing.
        assert expected != {row["id"] for row in world[name]}, query
    assert sum(bool(expected) for _, expected in cases) >= len(cases) - 3


ORDERINGS = {
    "customers": {"name": "name", "account_number": "account_number", "id": "id", "status": "status"},
    "subscriptions": {"id": "id", "start_date": "start_date", "next_bill_date": "next_bill_date"},
    "invoices": {"id": "id", "issue_date": "issue_date", "due_date": "due_date", "total_cents": "total_cents"},
    "payments": {"id": "id", "received_on": "received_on", "amount_cents": "amount_cents"},
}


@pytest.mark.parametrize("name", list(ORDERINGS))
def test_every_ordering_ascending_and_descending_with_ties_broken_by_id(client, headers, world, name):
    for ordering, field in ORDERINGS[name].items():
        for descending in (False, True):
            expected = in_order(world[name], field, descending)
            query = f"ordering={'-' if descending else ''}{ordering}"
            assert listed(client, f"{LISTS[name]}?{query}", headers) == expected, query
            # The same order walked by cursor, three rows a page, forwards and then back.
            forward, backward = walk_cursor(client, f"{LISTS[name]}?{query}&page_size=3", headers)
            assert forward == expected, query
            assert backward == expected, query


def test_the_default_orders(client, headers, world):
    assert listed(client, LISTS["customers"], headers) == in_order(world["customers"], "name")
    for name in ("subscriptions", "invoices", "payments"):
        assert listed(client, LISTS[name], headers) == in_order(world[name], "id", descending=True), name


BAD_FILTERS = [("customers", "ordering=newest"), ("customers", "ordering=-created_at"), ("customers", "status=gone"),
               ("customers", "plan_id=0"), ("customers", "created_from=2026-02-30"),
               ("subscriptions", "ordering=-customer_id"), ("subscriptions", "customer_id=99999999999"),
               ("invoices", "status=unpaid"), ("invoices", "min_total_cents=-1"), ("invoices", "customer="),
               ("payments", "method=cheque"), ("payments", "received_from=2026-02-30"),
               ("payments", "max_amount_cents=1e3"), ("plans", "status=active"), ("plans", "ordering=name"),
               ("customers", "search=a%00b"), ("subscriptions", "search=%00"), ("invoices", "customer=1%00"),
               ("invoices", "search=INV%00"), ("payments", "customer=C1%00")]


def test_bad_filter_values_are_field_errors(client, headers):
    for name, query in BAD_FILTERS:
        body = assert_error(client.get(f"{LISTS[name]}?{query}", headers=headers), 422, "VALIDATION_ERROR")
        assert query.split("=")[0] in body["error"]["details"], (name, query)


# --- pages, links and cursors -----------------------------------------------------------------------------------

def walk_pages(client, url: str, headers) -> tuple[list[int], list[str]]:
    """Follow `next` links from `url`; return the ids seen and every link followed."""
    ids, links, page = [], [], url
    while page:
        body = client.get(page, headers=headers).get_json()
        ids += [row["id"] for row in body["data"]]
        page = body["pagination"]["next"]
        if page:
            links.append(page)
        assert len(links) < 100
    return ids, links


def walk_cursor(client, url: str, headers) -> tuple[list[int], list[int]]:
    """Follow next_cursor links to the end, then `previous` links back; return both walks in forward order."""
    forward, pages, page = [], [], url
    while page:
        body = client.get(page, headers=headers).get_json()
        assert body["success"], body
        pages.append(body)
        forward += [row["id"] for row in body["data"]]
        page = body["pagination"]["next_cursor"]
        assert len(pages) < 100
    backward, page = [row["id"] for row in pages[-1]["data"]], pages[-1]["pagination"]["previous"]
    if len(pages) > 1:
        assert page and "before=" in page
    while page:
        body = client.get(page, headers=headers).get_json()
        assert body["pagination"]["page"] is None  # a cursor page has no number
        backward = [row["id"] for row in body["data"]] + backward
        page = body["pagination"]["previous"]
        assert len(backward) <= len(forward)
    return forward, backward


PAGED = {"customers": ("status=active", lambda w: ids_where(w["customers"], lambda r: r["status"] == "active")),
         "subscriptions": ("search=fiber", lambda w: ids_where(w["subscriptions"],
                                                              lambda r: "fiber" in r["pppoe_username"])),
         "invoices": ("max_total_cents=2500", lambda w: ids_where(w["invoices"], lambda r: r["total_cents"] <= 2500)),
         "payments": ("max_amount_cents=1200", lambda w: ids_where(w["payments"],
                                                                  lambda r: r["amount_cents"] <= 1200))}


@pytest.mark.parametrize("name", list(PAGED))
def test_page_links_carry_the_filters_and_both_walks_visit_every_row_once(client, headers, world, name):
    query, expected_of = PAGED[name]
    expected = expected_of(world)
    first = client.get(f"{LISTS[name]}?{query}&page_size=2", headers=headers).get_json()["pagination"]
    assert (first["page"], first["page_size"], first["total"], first["total_capped"]) == (1, 2, len(expected),
                                                                                          False)
    assert first["pages"] == -(-len(expected) // 2) and first["previous"] is None
    assert parse_qs(urlsplit(first["next"]).query) == {**parse_qs(query), "page_size": ["2"], "page": ["2"]}

    ids, links = walk_pages(client, f"{LISTS[name]}?{query}&page_size=2", headers)
    assert len(ids) == len(set(ids)) and set(ids) == expected
    assert len(links) == first["pages"] - 1
    for link in links:
        params = parse_qs(urlsplit(link).query)
        assert all(params.get(key) == value for key, value in parse_qs(query).items()), link

    forward, backward = walk_cursor(client, f"{LISTS[name]}?{query}&page_size=2", headers)
    assert forward == ids == backward
    cursor_link = first["next_cursor"]
    assert parse_qs(urlsplit(cursor_link).query).keys() == {*parse_qs(query), "page_size", "after"}

    last = client.get(f"{LISTS[name]}?{query}&page_size=2&page={first['pages']}", headers=headers).get_json()
    assert last["pagination"]["next"] is None and last["pagination"]["next_cursor"] is None
    assert f"page={first['pages'] - 1}" in last["pagination"]["previous"] and query in last["pagination"]["previous"]


def test_the_plan_list_pages_by_number_only(client, headers):
    plans = [PlanFactory() for _ in range(7)]
    first = client.get("/api/plans/?page_size=3", headers=headers).get_json()["pagination"]
    assert (first["total"], first["pages"], first["next_cursor"]) == (7, 3, None)
    ids, links = walk_pages(client, "/api/plans/?page_size=3", headers)
    assert sorted(ids) == sorted(p.id for p in plans) and len(ids) == len(set(ids)) and len(links) == 2
    body = assert_error(client.get("/api/plans/?after=abc", headers=headers), 422, "VALIDATION_ERROR")
    assert "after" in body["error"]["details"]


def test_page_size_is_1_to_200_and_pages_start_at_1(client, headers):
    for name, url in LISTS.items():
        for query, field in (("page_size=201", "page_size"), ("page_size=0", "page_size"), ("page=0", "page"),
                             ("page_size=ten", "page_size"), ("page=-1", "page")):
            body = assert_error(client.get(f"{url}?{query}", headers=headers), 422, "VALIDATION_ERROR")
            assert field in body["error"]["details"], (name, query)
        assert client.get(f"{url}?page_size=200", headers=headers).get_json()["pagination"]["page_size"] == 200


def cursor(value, row_id) -> str:
    return base64.urlsafe_b64encode(json.dumps([value, row_id]).encode()).decode().rstrip("=")


MALFORMED = ["not-a-cursor", "!!!", base64.urlsafe_b64encode(b"[1, 2, 3]").decode(),
             base64.urlsafe_b64encode(b"null").decode(), base64.urlsafe_b64encode(b"\xff\xfe").decode(),
             cursor(True, 1), cursor(1, "one"), cursor(1, 2**64), cursor("a\x00b", 1), cursor(1, None)]


@pytest.mark.parametrize("name", CURSOR_LISTS)
def test_a_malformed_cursor_or_both_directions_is_422_not_500(client, headers, world, name):
    first = client.get(f"{LISTS[name]}?page_size=2", headers=headers).get_json()["pagination"]
    after = parse_qs(urlsplit(first["next_cursor"]).query)["after"][0]
    body = assert_error(client.get(f"{LISTS[name]}?after={after}&before={after}", headers=headers), 422,
                        "VALIDATION_ERROR")
    assert "before" in body["error"]["details"]
    orderings = {"customers": ["name", "-id", "status"], "subscriptions": ["-id", "start_date"],
                 "invoices": ["-id", "issue_date", "total_cents"], "payments": ["-id", "received_on"]}[name]
    for ordering in orderings:
        for value in [*MALFORMED, cursor("2026-13-45", 1), cursor(5, 1), cursor("x", 1)]:
            for direction in ("after", "before"):
                response = client.get(f"{LISTS[name]}?ordering={ordering}&{direction}={value}", headers=headers)
                assert response.status_code in (200, 422), (ordering, value, response.data[:300])
                if response.status_code == 422:
                    assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"
    # A cursor that does not fit the sort column is refused rather than compared.
    for ordering, value in {"customers": [("-id", "x"), ("name", 5)], "subscriptions": [("start_date", "x")],
                            "invoices": [("total_cents", "x"), ("issue_date", "2026-13-45")],
                            "payments": [("-id", "x")]}[name]:
        assert_error(client.get(f"{LISTS[name]}?ordering={ordering}&after={cursor(value, 1)}", headers=headers),
                     422, "VALIDATION_ERROR")
    for value in MALFORMED:
        assert_error(client.get(f"{LISTS[name]}?after={value}", headers=headers), 422, "VALIDATION_ERROR")


# --- conditional GETs -------------------------------------------------------------------------------------------

def write_to(client, name: str, world_ids: dict) -> None:
    """Change one record of the list `name` through the API."""
    admin = bearer("admin", "read,write,billing")
    calls = {
        "customers": lambda: client.patch(f"/api/customers/{world_ids['customer']}/", json={"name": "Renamed"},
                                          headers=admin),
        "subscriptions": lambda: client.patch(f"/api/subscriptions/{world_ids['subscription']}/",
                                              json={"pppoe_username": "renamed"}, headers=admin),
        "plans": lambda: client.patch(f"/api/plans/{world_ids['plan']}/", json={"name": "Renamed"}, headers=admin),
        "invoices": lambda: client.post("/api/billing/invoices/", headers=admin, json={
            "customer_id": world_ids["customer"], "lines": [{"description": "x", "unit_price_cents": 1}]}),
        "payments": lambda: client.post("/api/billing/payments/", headers=admin, json={
            "customer_id": world_ids["customer"], "amount_cents": 1, "method": "cash"}),
    }
    response = calls[name]()
    assert response.status_code in (200, 201), response.data[:300]


@pytest.mark.parametrize("name", list(LISTS))
def test_an_unchanged_list_answers_304_and_a_write_changes_its_etag(client, headers, name):
    sub = SubscriptionFactory()
    ids = {"customer": sub.customer_id, "subscription": sub.id, "plan": sub.plan_id}
    write_to(client, "payments", ids)  # every list has a row
    write_to(client, "invoices", ids)
    url = f"{LISTS[name]}?page_size=5"
    first = client.get(url, headers=headers)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag.startswith('"') and "Authorization" in first.headers["Vary"]
    again = client.get(url, headers={**headers, "If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    assert client.get(url, headers={**headers, "If-None-Match": '"other"'}).status_code == 200

    write_to(client, name, ids)
    changed = client.get(url, headers={**headers, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.get_json()["data"]
    assert changed.headers["ETag"] != etag


# --- a constant number of statements ----------------------------------------------------------------------------

def add_rows(name: str, count: int, customer_id: int, plan_id: int, start: int) -> None:
    """Insert `count` more rows into the table behind the list `name`, in one statement."""
    if not count:
        return
    base = today()
    if name == "customers":
        rows = [{"account_number": f"Q{start + n:08d}", "name": f"Bulk {start + n:04d}", "status": "active"}
                for n in range(count)]
        db.session.execute(insert(Customer), rows)
    elif name == "plans":
        rows = [{"code": f"BULK-{start + n}", "name": f"Bulk {start + n}", "download_mbps": 10, "upload_mbps": 1,
                 "monthly_price_cents": 100 + n, "setup_fee_cents": 0, "tax_rate_bp": 0, "currency": "USD",
                 "active": True} for n in range(count)]
        db.session.execute(insert(Plan), rows)
    elif name == "subscriptions":
        rows = [{"customer_id": customer_id, "plan_id": plan_id, "status": "active", "start_date": base,
                 "billing_day": 1, "next_bill_date": base, "pppoe_username": f"bulk{start + n}"} for n in range(count)]
        db.session.execute(insert(Subscription), rows)
    else:
        for n in range(count):
            if name == "invoices":
                make_invoice(customer_id, "open", base, 100 + n, start + n)
            else:
                make_payment(customer_id, 100 + n, "cash", base)
    db.session.commit()


# The list request's statements: the token lookup, the page rows and a capped count. The customer list keeps its
# counts (and page anchors) under the data versions the token lookup reads, so a repeated request runs two; a
# cold one three (tests/api/test_list_versions.py).
EXPECTED_STATEMENTS = {
    ("customers", ""): 2, ("customers", "status=active"): 2, ("customers", "search=bulk"): 2,
    ("subscriptions", ""): 3, ("subscriptions", "status=active"): 3,
    ("plans", ""): 3,
    ("invoices", ""): 3, ("invoices", "status=open&min_total_cents=1"): 3,
    ("payments", ""): 3, ("payments", "method=cash"): 3,
}


@pytest.mark.parametrize("name", list(LISTS))
def test_a_list_runs_the_same_few_statements_whatever_the_page_size_and_row_count(client, headers, query_counter,
                                                                                   name):
    customer, plan = CustomerFactory(), PlanFactory()
    add_rows(name, 4 if name in ("customers", "plans") else 5, customer.id, plan.id, 0)  # five rows in all
    queries = [query for (list_name, query) in EXPECTED_STATEMENTS if list_name == name]
    counts: dict[tuple, int] = {}
    for rows, extra in ((5, 0), (250, 245)):
        add_rows(name, extra, customer.id, plan.id, 10)
        invalidate_customer_totals()  # as every bulk load of customers does
        for query in queries:
            for size in (10, 200):
                url = f"{LISTS[name]}?page_size={size}&{query}"
                client.get(url, headers=headers)  # warms the token's last-use stamp and the cached total
                with query_counter() as statements:
                    response = client.get(url, headers=headers)
                body = response.get_json()
                assert response.status_code == 200 and len(body["data"]) == min(size, body["pagination"]["total"])
                if not query:
                    assert body["pagination"]["total"] == rows
                counts[(query, rows, size)] = len(statements)
    for (query, rows, size), seen in counts.items():
        assert seen == EXPECTED_STATEMENTS[(name, query)] <= 3, (query, rows, size, counts)

"""GET /api/plans/ and /api/plans/{id}/: the envelope, page links and a constant number of queries."""
from __future__ import annotations

import re

from tests.api.helpers import bearer
from tests.factories import PlanFactory

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_a_plan_list_comes_in_the_envelope_with_page_links(client):
    PlanFactory.create_batch(5)
    headers = bearer()
    response = client.get("/api/plans/?page_size=2", headers=headers)
    assert response.status_code == 200
    assert response.headers["X-API-Version"] == "1"
    body = response.get_json()
    assert set(body) == {"success", "message", "data", "pagination", "timestamp"}
    assert body["success"] is True and TIMESTAMP.match(body["timestamp"])
    assert len(body["data"]) == 2
    assert body["pagination"] == {"page": 1, "page_size": 2, "total": 5, "total_capped": False, "pages": 3,
                                  "next": "/api/plans/?page_size=2&page=2", "previous": None, "next_cursor": None}

    last = client.get(body["pagination"]["next"].replace("page=2", "page=3"), headers=headers).get_json()
    assert len(last["data"]) == 1
    assert last["pagination"]["next"] is None and last["pagination"]["previous"] == "/api/plans/?page_size=2&page=2"

    ids = []
    page = "/api/plans/?page_size=2"
    while page:
        listing = client.get(page, headers=headers).get_json()
        ids += [plan["id"] for plan in listing["data"]]
        page = listing["pagination"]["next"]
    assert len(ids) == len(set(ids)) == 5


def test_a_plan_is_money_in_minor_units(client):
    plan = PlanFactory(code="FIBER-100", monthly_price_cents=4900, data_cap_gb=None)
    body = client.get(f"/api/plans/{plan.id}/", headers=bearer()).get_json()
    assert body["success"] is True and "pagination" not in body
    data = body["data"]
    assert data["id"] == plan.id and data["code"] == "FIBER-100"
    assert data["monthly_price_cents"] == 4900 and data["currency"] == "USD" and data["data_cap_gb"] is None
    assert data["created_at"].endswith("+00:00")


def test_page_size_is_capped_at_200(client):
    body = client.get("/api/plans/?page_size=201", headers=bearer()).get_json()
    assert body["error"]["code"] == "VALIDATION_ERROR" and "page_size" in body["error"]["details"]


def test_a_page_past_the_end_is_empty_and_links_back(client):
    PlanFactory.create_batch(3)
    body = client.get("/api/plans/?page=9&page_size=2", headers=bearer()).get_json()
    assert body["data"] == []
    assert body["pagination"]["next"] is None and body["pagination"]["previous"] == "/api/plans/?page_size=2&page=2"


def test_the_list_runs_a_constant_number_of_queries(client, query_counter):
    PlanFactory.create_batch(30)
    headers = bearer()
    client.get("/api/plans/", headers=headers)  # the first call records last_used_at
    counts = []
    for size in (1, 10, 30):
        with query_counter() as statements:
            response = client.get(f"/api/plans/?page_size={size}", headers=headers)
        assert len(response.get_json()["data"]) == size
        counts.append(len(statements))
    assert counts[0] == counts[1] == counts[2] <= 3

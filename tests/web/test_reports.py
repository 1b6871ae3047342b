"""Reports: AR aging, invoiced vs collected, MRR by plan and top debtors, on money the billing core moved.

The scenario is built through the real services (the monthly run, drafts issued, payments recorded and
reversed, an invoice voided), so each figure below is the one the ledger holds, to the cent.
"""
from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, timedelta
from html.parser import HTMLParser

import pytest
from flask_migrate import upgrade

from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, Plan
from isp_admin.services.billing import invoices, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.platform.clock import today
from isp_admin.services.reporting.reports import (
    ar_aging,
    invalidate_reports,
    invoiced_vs_collected,
    mrr_by_plan,
    top_debtors,
)
from tests.conftest import ROOT, FreshContextClient, app_config
from tests.factories import PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory

AS_OF = date(2026, 6, 30)
FULL = 4900 + 784  # Home 49 with 16% tax


def text_of(response) -> str:
    return response.get_data(as_text=True)


def bill(customer, on: date) -> Invoice:
    """Run the monthly billing for one customer on a date, committed like the job does."""
    invoice = billing.generate_invoice_for_customer(customer.id, on)
    db.session.commit()
    assert invoice is not None
    return invoice


def issue_adhoc(customer, cents: int, on: date) -> Invoice:
    """Issue a one-line invoice (no tax) on `on`; it falls due 14 days later."""
    draft = invoices.create_draft(customer.id, [{"description": "Installation", "quantity": 1,
                                                 "unit_price_cents": cents, "tax_rate_bp": 0}], on)
    invoice = invoices.issue(draft.id, on)
    db.session.commit()
    return invoice


def pay(customer, cents: int, on: date):
    payment, _ = payments.record_payment(customer.id, cents, "cash", on, on)
    db.session.commit()
    return payment


def subscribe(customer, plan, start: date, **fields):
    return SubscriptionFactory(customer=customer, plan=plan, start_date=start, next_bill_date=start,
                               billing_day=start.day, **fields)


@pytest.fixture
def scenario(app):
    """Five customers whose invoices and payments span February to July 2026."""
    home = PlanFactory(name="Home 49", code="HOME-49", monthly_price_cents=4900, tax_rate_bp=1600)
    fibre = PlanFactory(name="Fibre 79", code="FIBRE-79", monthly_price_cents=7900, tax_rate_bp=1600)
    lite = PlanFactory(name="Lite 20", code="LITE-20", monthly_price_cents=2000, tax_rate_bp=0)
    amina = CustomerFactory(name="Amina Otieno")
    baraka = CustomerFactory(name="Baraka Njoroge")
    chausiku = CustomerFactory(name="Chausiku Wambui")
    daudi = CustomerFactory(name="Daudi Kiprono")
    eshe = CustomerFactory(name="Eshe Mutua")

    # Amina: billed March to June (due the 15th), pays March's invoice; a second payment bounces.
    subscribe(amina, home, date(2026, 3, 1))
    for month in (3, 4, 5, 6):
        bill(amina, date(2026, month, 1))
    pay(amina, FULL, date(2026, 6, 20))
    bounced = pay(amina, 1000, date(2026, 6, 25))
    payments.reverse_payment(bounced.id, "Cheque bounced", date(2026, 6, 26))
    db.session.commit()
    # Baraka: a special price, billed 20 June (due 4 July, so current on 30 June), pays part.
    subscribe(baraka, fibre, date(2026, 6, 20), price_override_cents=10000)
    bill(baraka, date(2026, 6, 20))
    pay(baraka, 1600, date(2026, 6, 25))
    # Chausiku: February's invoice is voided; March's is paid in full.
    subscribe(chausiku, home, date(2026, 2, 1))
    february = bill(chausiku, date(2026, 2, 1))
    invoices.void(february.id, "Billed in error", date(2026, 2, 10))
    db.session.commit()
    bill(chausiku, date(2026, 3, 1))
    pay(chausiku, FULL, date(2026, 3, 10))
    # Daudi: first billed after 30 June.
    subscribe(daudi, lite, date(2026, 7, 5))
    bill(daudi, date(2026, 7, 5))
    # Eshe: a large one-off installation invoice, unpaid, due 15 May.
    issue_adhoc(eshe, 50000, date(2026, 5, 1))
    # Not revenue: pending, suspended and cancelled subscriptions (never billed here).
    subscribe(eshe, fibre, date(2026, 12, 1), status="pending")
    subscribe(daudi, fibre, date(2026, 1, 1), status="suspended", suspension_reason="manual")
    subscribe(chausiku, lite, date(2026, 1, 1), status="cancelled", pppoe_username=None)
    invalidate_reports()
    return {"amina": amina.id, "baraka": baraka.id, "chausiku": chausiku.id, "daudi": daudi.id, "eshe": eshe.id}


# --- figures --------------------------------------------------------------------------------------------------

def test_aging_buckets_open_balances_by_days_past_due(scenario):
    report = ar_aging(AS_OF)
    # current: Baraka 11600 - 1600; 1-30: Amina June; 31-60: Amina May + Eshe; 61-90: Amina April.
    assert report.totals == (10000, FULL, FULL + 50000, FULL, 0)
    assert report.counts == (1, 1, 2, 1, 0)
    assert report.total_cents == 10000 + 3 * FULL + 50000
    assert report.customer_count == 3
    assert [(r.customer_id, r.amounts, r.total_cents) for r in report.customers] == [
        (scenario["eshe"], (0, 0, 50000, 0, 0), 50000),
        (scenario["amina"], (0, FULL, FULL, FULL, 0), 3 * FULL),
        (scenario["baraka"], (10000, 0, 0, 0, 0), 10000),
    ]
    # As of a day before Daudi's invoice and after: issued invoices count only from their issue date.
    assert ar_aging(date(2026, 7, 5)).total_cents == report.total_cents + 2000


def test_invoiced_vs_collected_fills_quiet_months_with_zero(scenario):
    report = invoiced_vs_collected(date(2026, 1, 1), date(2026, 8, 1))
    assert [(m.month, m.invoiced_cents, m.collected_cents) for m in report.months] == [
        (date(2026, 1, 1), 0, 0),
        (date(2026, 2, 1), 0, 0),                               # the only invoice was voided
        (date(2026, 3, 1), 2 * FULL, FULL),                     # Amina + Chausiku; Chausiku paid
        (date(2026, 4, 1), FULL, 0),
        (date(2026, 5, 1), FULL + 50000, 0),
        (date(2026, 6, 1), FULL + 11600, FULL + 1600),          # the bounced 10.00 is not collected
        (date(2026, 7, 1), 2000, 0),
        (date(2026, 8, 1), 0, 0),
    ]
    assert report.invoiced_cents == 5 * FULL + 50000 + 11600 + 2000
    assert report.collected_cents == 2 * FULL + 1600


def test_mrr_sums_active_subscriptions_per_plan(scenario):
    report = mrr_by_plan()
    assert [(p.name, p.subscriptions, p.mrr_cents) for p in report.plans] == [
        ("Fibre 79", 1, 10000),   # Baraka's own price, not the plan's 79.00
        ("Home 49", 2, 9800),
        ("Lite 20", 1, 2000),
    ]
    assert (report.subscriptions, report.mrr_cents) == (4, 21800)


def test_top_debtors_rank_overdue_balances(scenario):
    report = top_debtors(AS_OF)
    assert [(d.customer_id, d.overdue_cents, d.owed_cents, d.oldest_due, d.days_overdue, d.overdue_invoices)
            for d in report.debtors] == [
        (scenario["eshe"], 50000, 50000, date(2026, 5, 15), 46, 1),
        (scenario["amina"], 3 * FULL, 3 * FULL, date(2026, 4, 15), 76, 3),
    ]


@pytest.fixture
def boundaries(app):
    """One customer with an invoice due on each side of every bucket boundary, as seen on AS_OF."""
    customer = CustomerFactory(name="Boundary Customer")
    # days past due -> amount: distinct powers of two, so every sum shows exactly which invoices it holds
    due_days_ago = {-1: 100, 0: 200, 1: 400, 30: 800, 31: 1600, 60: 3200, 61: 6400, 90: 12800, 91: 25600}
    for days, cents in due_days_ago.items():
        invoice = issue_adhoc(customer, cents, AS_OF - timedelta(days=days + 14))
        assert invoice.due_date == AS_OF - timedelta(days=days)
    invalidate_reports()
    return customer


def test_aging_bucket_boundaries(boundaries):
    report = ar_aging(AS_OF)
    assert report.totals == (100 + 200, 400 + 800, 1600 + 3200, 6400 + 12800, 25600)
    assert report.counts == (2, 2, 2, 2, 1)
    debtor, = top_debtors(AS_OF).debtors
    assert debtor.overdue_cents == 400 + 800 + 1600 + 3200 + 6400 + 12800 + 25600
    assert debtor.owed_cents == debtor.overdue_cents + 300
    assert (debtor.oldest_due, debtor.days_overdue, debtor.overdue_invoices) == (AS_OF - timedelta(days=91), 91, 7)


def test_a_due_date_counts_as_current_on_the_day_and_overdue_the_day_after(boundaries):
    assert ar_aging(AS_OF - timedelta(days=1)).totals[0] == 100 + 200 + 400  # due yesterday was due "today"
    assert ar_aging(AS_OF + timedelta(days=1)).totals[0] == 100


# --- pages ----------------------------------------------------------------------------------------------------

class _Page(HTMLParser):
    """Collect the tables' cell texts and the attributes of scripts, links and canvases."""

    def __init__(self):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[tuple[str, dict]] = []
        self._table = self._cell = None
        self.inline_scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "script" and "src" not in attrs:
            self.inline_scripts += 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(response) -> _Page:
    page = _Page()
    page.feed(text_of(response))
    return page


def chart_of(page: _Page) -> dict:
    canvases = [attrs for tag, attrs in page.tags if tag == "canvas" and "data-chart" in attrs]
    assert len(canvases) == 1
    return json.loads(canvases[0]["data-chart"])



def account(customer_id: int) -> str:
    return db.session.get(Customer, customer_id).account_number


def test_aging_page_shows_buckets_customers_and_the_chart_data(client, login, scenario):
    login("readonly")
    response = client.get("/reports/aging?as_of=2026-06-30")
    assert response.status_code == 200
    page = parse(response)
    assert page.tables["aging-buckets"][1:] == [
        ["Current", "1", "$100.00"], ["1–30 days", "1", "$56.84"], ["31–60 days", "2", "$556.84"],
        ["61–90 days", "1", "$56.84"], ["Over 90 days", "0", "$0.00"], ["Total", "5", "$770.52"]]
    assert page.tables["aging-customers"][1:] == [
        [account(scenario["eshe"]), "Eshe Mutua", "–", "–", "$500.00", "–", "–", "$500.00"],
        [account(scenario["amina"]), "Amina Otieno", "–", "$56.84", "$56.84", "$56.84", "–", "$170.52"],
        [account(scenario["baraka"]), "Baraka Njoroge", "$100.00", "–", "–", "–", "–", "$100.00"]]
    assert f'href="/customers/{scenario["eshe"]}"' in text_of(response)
    assert chart_of(page) == {"type": "bar", "currency": "USD",
                              "labels": ["Current", "1–30 days", "31–60 days", "61–90 days", "Over 90 days"],
                              "series": [{"label": "Open balance", "cents": [10000, FULL, FULL + 50000, FULL, 0]}]}
    assert 'href="/reports/aging?as_of=2026-06-30&amp;format=csv"' in text_of(response)


def test_aging_defaults_to_today(client, login, app):
    login()
    customer = CustomerFactory(name="Due Today")
    issue_adhoc(customer, 1234, today() - timedelta(days=14))
    response = client.get("/reports/aging")
    assert response.status_code == 200
    assert parse(response).tables["aging-buckets"][1] == ["Current", "1", "$12.34"]
    assert f'href="/reports/aging?as_of={today().isoformat()}&amp;format=csv"' in text_of(response)
    assert f'name="as_of" type="date" value="{today().isoformat()}"' in text_of(response)  # says which day


def test_invoiced_collected_page_lists_every_month(client, login, scenario):
    login("support")
    response = client.get("/reports/invoiced-collected?start=2026-01&end=2026-07")
    assert response.status_code == 200
    page = parse(response)
    rows = page.tables["months"][1:]
    assert rows[0] == ["Jan 2026", "$0.00", "$0.00", "$0.00"]
    assert rows[2] == ["Mar 2026", "$113.68", "$56.84", "$56.84"]
    assert rows[5] == ["Jun 2026", "$172.84", "$72.84", "$100.00"]
    assert rows[-1] == ["Total", "$920.20", "$129.68", "$790.52"]
    chart = chart_of(page)
    assert chart["labels"] == ["Jan 2026", "Feb 2026", "Mar 2026", "Apr 2026", "May 2026", "Jun 2026", "Jul 2026"]
    assert chart["series"] == [
        {"label": "Invoiced", "cents": [0, 0, 2 * FULL, FULL, FULL + 50000, FULL + 11600, 2000]},
        {"label": "Collected", "cents": [0, 0, FULL, 0, 0, FULL + 1600, 0]}]


def test_invoiced_collected_defaults_to_the_last_twelve_months_all_zero_when_quiet(client, login):
    login()
    response = client.get("/reports/invoiced-collected")
    assert response.status_code == 200
    rows = parse(response).tables["months"][1:-1]
    this_month = today().replace(day=1)
    assert len(rows) == 12
    assert rows[-1][0] == f"{this_month:%b %Y}"
    assert all(row[1:] == ["$0.00", "$0.00", "$0.00"] for row in rows)
    assert re.search(rf'name="end" [^>]*value="{this_month:%Y-%m}"', text_of(response))  # says which months
    # Only a start: twelve months from it.
    rows = parse(client.get("/reports/invoiced-collected?start=2025-03")).tables["months"][1:-1]
    assert (rows[0][0], rows[-1][0], len(rows)) == ("Mar 2025", "Feb 2026", 12)
    rows = parse(client.get("/reports/invoiced-collected?start=2023-01&end=2025-12")).tables["months"][1:-1]
    assert len(rows) == 36


def test_mrr_page(client, login, scenario):
    login("billing")
    response = client.get("/reports/mrr")
    assert response.status_code == 200
    page = parse(response)
    assert page.tables["plans"][1:] == [
        ["Fibre 79 FIBRE-79", "1", "$100.00", "45.9%"], ["Home 49 HOME-49", "2", "$98.00", "45.0%"],
        ["Lite 20 LITE-20", "1", "$20.00", "9.2%"], ["Total", "4", "$218.00", ""]]
    assert chart_of(page) == {"type": "doughnut", "currency": "USD", "labels": ["Fibre 79", "Home 49", "Lite 20"],
                              "series": [{"label": "MRR", "cents": [10000, 9800, 2000]}]}


def test_debtors_page_links_to_each_customer(client, login, scenario):
    login("readonly")
    response = client.get("/reports/debtors?as_of=2026-06-30")
    assert response.status_code == 200
    rows = parse(response).tables["debtors"][1:]
    assert rows == [
        [account(scenario["eshe"]), "Eshe Mutua", "active", "$500.00", "$500.00", "2026-05-15", "46", "1"],
        [account(scenario["amina"]), "Amina Otieno", "active", "$170.52", "$170.52", "2026-04-15", "76", "3"]]
    assert f'href="/customers/{scenario["amina"]}"' in text_of(response)
    assert "Baraka" not in text_of(response)  # owes only what is not due yet


@pytest.mark.parametrize("path", ["/reports/aging", "/reports/debtors", "/reports/mrr"])
def test_empty_states(client, login, path):
    login()
    response = client.get(path)
    assert response.status_code == 200
    assert "empty-state" in text_of(response)
    assert "<canvas" not in text_of(response)


def test_the_index_links_every_report_and_its_csv(client, login):
    login("readonly")
    response = client.get("/reports/")
    assert response.status_code == 200
    for path in ("/reports/aging", "/reports/invoiced-collected", "/reports/mrr", "/reports/debtors"):
        assert f'href="{path}"' in text_of(response)
        assert f'href="{path}?format=csv"' in text_of(response)
    assert 'href="/reports/"' in text_of(client.get("/"))  # the navbar shows Reports


@pytest.mark.parametrize(("path", "field", "message"), [
    ("/reports/aging?as_of=31-06-2026", "as_of", "Not a valid date value."),
    ("/reports/aging?as_of=0001-01-01", "as_of", "Pick a date between 1970 and 2999."),
    ("/reports/debtors?as_of=yesterday", "as_of", "Not a valid date value."),
    ("/reports/invoiced-collected?start=2026-05&end=2026-01", "end", "Pick a month on or after the first."),
    ("/reports/invoiced-collected?start=2023-01&end=2026-01", "start", "At most 36 months."),
    ("/reports/invoiced-collected?start=2026-13", "start", "Not a valid date value."),
    ("/reports/invoiced-collected?end=9999-12", "end", "Pick a date between 1970 and 2999."),
])
def test_bad_filters_get_a_form_error_and_keep_what_was_typed(client, login, path, field, message):
    login()
    response = client.get(path)
    assert response.status_code == 400
    body = text_of(response)
    assert message in body
    typed = dict(re.findall(r"[?&](\w+)=([^&]*)", path))[field]
    assert re.search(rf'<input[^>]*id="{field}"[^>]*value="{re.escape(typed)}"', body) or \
        re.search(rf'<input[^>]*value="{re.escape(typed)}"[^>]*id="{field}"', body)
    assert "<canvas" not in body
    csv = client.get(path + "&format=csv")
    assert csv.status_code == 400 and csv.mimetype == "text/html"


# --- CSV ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/reports/aging", "/reports/invoiced-collected", "/reports/mrr", "/reports/debtors"])
def test_an_unknown_format_is_a_bad_request(client, login, path):
    login()
    assert client.get(f"{path}?format=xlsx").status_code == 400


def read_csv(response) -> list[list[str]]:
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    return list(csv.reader(io.StringIO(text_of(response))))


def test_aging_csv(client, login, scenario):
    login("readonly")
    response = client.get("/reports/aging?format=csv&as_of=2026-06-30")
    assert response.headers["Content-Disposition"] == 'attachment; filename="ar-aging-2026-06-30.csv"'
    assert read_csv(response) == [
        ["account_number", "customer", "current", "days_1_30", "days_31_60", "days_61_90", "days_over_90", "total"],
        [account(scenario["eshe"]), "Eshe Mutua", "0.00", "0.00", "500.00", "0.00", "0.00", "500.00"],
        [account(scenario["amina"]), "Amina Otieno", "0.00", "56.84", "56.84", "56.84", "0.00", "170.52"],
        [account(scenario["baraka"]), "Baraka Njoroge", "100.00", "0.00", "0.00", "0.00", "0.00", "100.00"],
        ["", "Total", "100.00", "56.84", "556.84", "56.84", "0.00", "770.52"]]


def test_invoiced_collected_csv(client, login, scenario):
    login()
    response = client.get("/reports/invoiced-collected?format=csv&start=2026-02&end=2026-07")
    assert response.headers["Content-Disposition"] == \
        'attachment; filename="invoiced-vs-collected-2026-02-to-2026-07.csv"'
    rows = read_csv(response)
    assert rows[0] == ["month", "invoiced", "collected", "difference"]
    assert rows[1:] == [
        ["2026-02", "0.00", "0.00", "0.00"], ["2026-03", "113.68", "56.84", "56.84"],
        ["2026-04", "56.84", "0.00", "56.84"], ["2026-05", "556.84", "0.00", "556.84"],
        ["2026-06", "172.84", "72.84", "100.00"], ["2026-07", "20.00", "0.00", "20.00"],
        ["Total", "920.20", "129.68", "790.52"]]


def test_mrr_and_debtors_csv(client, login, scenario):
    login()
    response = client.get("/reports/mrr?format=csv")
    assert response.headers["Content-Disposition"] == f'attachment; filename="mrr-by-plan-{today()}.csv"'
    assert read_csv(response) == [
        ["plan_code", "plan", "active_subscriptions", "mrr"], ["FIBRE-79", "Fibre 79", "1", "100.00"],
        ["HOME-49", "Home 49", "2", "98.00"], ["LITE-20", "Lite 20", "1", "20.00"], ["", "Total", "4", "218.00"]]
    response = client.get("/reports/debtors?format=csv&as_of=2026-06-30")
    assert response.headers["Content-Disposition"] == 'attachment; filename="top-debtors-2026-06-30.csv"'
    assert read_csv(response) == [
        ["account_number", "customer", "status", "overdue", "total_owed", "oldest_due_date", "days_overdue",
         "overdue_invoices"],
        [account(scenario["eshe"]), "Eshe Mutua", "active", "500.00", "500.00", "2026-05-15", "46", "1"],
        [account(scenario["amina"]), "Amina Otieno", "active", "170.52", "170.52", "2026-04-15", "76", "3"]]


def test_large_amounts_stay_exact(client, login, app):
    login()
    customer = CustomerFactory(name="Big Spender")
    # Each invoice fits the column; their sum does not fit 32 bits, and must not overflow or round.
    issue_adhoc(customer, 2_100_000_001, AS_OF - timedelta(days=20))
    issue_adhoc(customer, 2_100_000_002, AS_OF - timedelta(days=50))
    rows = read_csv(client.get("/reports/aging?format=csv&as_of=2026-06-30"))
    assert rows[1][2:] == ["0.00", "21000000.01", "21000000.02", "0.00", "0.00", "42000000.03"]
    assert "$42,000,000.03" in text_of(client.get("/reports/debtors?as_of=2026-06-30"))


def test_csv_cells_never_start_a_formula(client, login, app):
    login()
    names = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+1", "-2+3", "@SUM(A1:A2)", "Plain Name"]
    for name in names:
        issue_adhoc(CustomerFactory(name=name), 1000, AS_OF - timedelta(days=40))
    PlanFactory(name="=cmd|' /C calc'!A0", code="EVIL", monthly_price_cents=100)
    SubscriptionFactory(plan=db.session.scalar(db.select(Plan).where(Plan.code == "EVIL")))
    for path in ("/reports/aging?format=csv&as_of=2026-06-30", "/reports/debtors?format=csv&as_of=2026-06-30"):
        shown = {row[1] for row in read_csv(client.get(path))[1:]} - {"Total"}
        assert shown == {"'=HYPERLINK(\"http://evil.example\",\"x\")", "'+1+1", "'-2+3", "'@SUM(A1:A2)", "Plain Name"}
    plans = {row[1] for row in read_csv(client.get("/reports/mrr?format=csv"))[1:]}
    assert "'=cmd|' /C calc'!A0" in plans
    # The page itself shows names as they are (escaped by Jinja, not prefixed).
    assert "+1+1" in text_of(client.get("/reports/aging?as_of=2026-06-30"))


# --- caching, queries, assets ---------------------------------------------------------------------------------

def test_reports_are_cached_and_billing_writes_invalidate_them(client, login, app):
    login()
    customer = CustomerFactory()
    invoice = issue_adhoc(customer, 5000, AS_OF - timedelta(days=40))

    def overdue_total(as_of: str = "2026-06-30") -> str:
        body = text_of(client.get(f"/reports/aging?as_of={as_of}"))
        match = re.search(r'id="aging-total">([^<]+)<', body)
        return match.group(1) if match else "nothing owed"

    assert overdue_total() == "$50.00"
    # A write behind the services' back (and past the database's guards) is not seen for up to a minute: the
    # figure is served from the cache.
    if db.engine.dialect.name == "postgresql":
        db.session.execute(db.text("SET LOCAL session_replication_role = replica"))
    db.session.execute(db.update(Invoice).where(Invoice.id == invoice.id).values(total_cents=6000,
                                                                                 subtotal_cents=6000))
    db.session.commit()
    assert overdue_total() == "$50.00"
    # Each billing write forgets the cached reports.
    pay(customer, 1000, AS_OF)
    assert overdue_total() == "$50.00"  # 60.00 - 10.00 paid
    invoices.void(invoice.id, "Wrong amount", AS_OF)
    db.session.commit()
    assert overdue_total() == "nothing owed"
    issue_adhoc(customer, 1700, AS_OF - timedelta(days=1))  # the 10.00 paid on the void invoice is credit
    assert overdue_total() == "$7.00"
    # The key carries the as-of date: another day is computed, not served from this one.
    assert overdue_total("2026-06-28") == "nothing owed"


def _populate(count: int, first: int) -> None:
    """Bill `count` more customers on 1 May and have every third one pay part, through the monthly run."""
    plan = PlanFactory(monthly_price_cents=3000 + first)
    customers = CustomerFactory.create_batch(count)
    for customer in customers:
        subscribe(customer, plan, date(2026, 5, 1))
    ids = [c.id for c in customers]
    billing.bill_customer_range(date(2026, 5, 1), (min(ids), max(ids)))
    db.session.commit()
    for customer in customers[::3]:
        pay(customer, 500, date(2026, 5, 20))


REPORT_PAGES = ["/reports/aging?as_of=2026-06-30", "/reports/invoiced-collected?start=2026-01&end=2026-12",
                "/reports/mrr", "/reports/debtors?as_of=2026-06-30", "/reports/aging?format=csv&as_of=2026-06-30",
                "/reports/invoiced-collected?format=csv", "/reports/mrr?format=csv",
                "/reports/debtors?format=csv&as_of=2026-06-30"]


def test_each_report_runs_the_same_few_queries_for_5_or_50_customers(client, login, app, query_counter):
    login()

    def counts() -> dict[str, int]:
        found = {}
        for path in REPORT_PAGES:
            invalidate_reports()
            with query_counter() as statements:
                assert client.get(path).status_code == 200
            found[path] = len(statements)
        return found

    _populate(5, 0)
    small = counts()
    _populate(45, 5)
    assert ar_aging(AS_OF).customer_count == 50  # the data really grew
    assert counts() == small
    # The signed-in user's row, then the aggregates: totals + top customers; invoiced + collected; one each. The
    # aging CSV is one aggregate: every customer, streamed, its Total added up from those rows.
    assert list(small.values()) == [3, 3, 2, 2, 2, 3, 2, 2]

    # A second read within the minute is served from the cache: no report query at all.
    client.get(REPORT_PAGES[0])
    with query_counter() as statements:
        client.get(REPORT_PAGES[0])
    assert len(statements) == 1  # the signed-in user


def test_charts_use_the_vendored_chart_js_and_no_outside_url(client, login, scenario):
    login()
    for path in ("/reports/aging?as_of=2026-06-30", "/reports/invoiced-collected", "/reports/mrr"):
        response = client.get(path)
        page = parse(response)
        scripts = [attrs.get("src") for tag, attrs in page.tags if tag == "script"]
        assert "/static/vendor/chart.js/chart.umd.min.js" in scripts
        assert "/static/js/reports.js" in scripts
        assert scripts.index("/static/vendor/chart.js/chart.umd.min.js") < scripts.index("/static/js/reports.js")
        assert page.inline_scripts == 0
        # Nothing is loaded from elsewhere, and no inline style (the CSP would refuse it).
        for tag, attrs in page.tags:
            for name in ("src", "href", "action"):
                assert not re.match(r"(?i)(https?:)?//", attrs.get(name) or ""), (tag, attrs)
            assert "style" not in attrs and not any(name.startswith("on") for name in attrs), (tag, attrs)
        assert "<style" not in text_of(response)
        assert not re.search(r"(?i)https?://", text_of(response))  # no outside URL anywhere in the page
    with client.get("/static/vendor/chart.js/chart.umd.min.js") as library:
        assert library.status_code == 200
        assert library.get_data(as_text=True).startswith("/*!\n * Chart.js v4.")
    with client.get("/static/js/reports.js") as script:
        assert script.status_code == 200


@pytest.fixture
def sqlite_app(tmp_path):
    """The embedded default (`make run`): SQLite and an in-process cache."""
    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance"))
    app.test_client_class = FreshContextClient
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        yield app
        db.session.remove()
        db.engine.dispose()


def test_the_reports_on_sqlite(sqlite_app):
    customer = CustomerFactory(name="Lake Customer")
    subscribe(customer, PlanFactory(name="Home 49", monthly_price_cents=4900), date(2026, 12, 1))
    for days, cents in {0: 100, 31: 200, 91: 400}.items():
        issue_adhoc(customer, cents, AS_OF - timedelta(days=days + 14))
    pay(customer, 50, date(2026, 6, 29))  # the oldest first: 4.00 -> 3.50
    assert ar_aging(AS_OF).totals == (100, 0, 200, 0, 350)
    debtor, = top_debtors(AS_OF).debtors
    assert (debtor.overdue_cents, debtor.oldest_due, debtor.days_overdue) == (550, date(2026, 3, 31), 91)
    months = invoiced_vs_collected(date(2026, 3, 1), date(2026, 6, 1)).months
    assert [(m.invoiced_cents, m.collected_cents) for m in months] == [(400, 0), (0, 0), (200, 0), (100, 50)]
    assert [(p.name, p.mrr_cents) for p in mrr_by_plan().plans] == [("Home 49", 4900)]
    client = sqlite_app.test_client()
    user = UserFactory(role="readonly")
    assert client.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 302
    assert read_csv(client.get("/reports/debtors?format=csv&as_of=2026-06-30"))[1][5] == "2026-03-31"

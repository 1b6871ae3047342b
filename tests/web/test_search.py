"""The global search: one box finds customers, invoice and credit-note numbers and payment references; a number
that names one document opens it; every kind is one bounded, index-friendly query; hostile text is harmless."""
from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import or_, select, text

from isp_admin.extensions import db
from isp_admin.models import CreditNote, Invoice, Payment
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.billing import payments as payment_service
from isp_admin.services.platform.clock import today
from isp_admin.services.platform.lookups import number_condition, parse_number, starts_with
from tests.conftest import is_postgres
from tests.factories import CustomerFactory, SubscriptionFactory
from tests.web.billing_world import billed_customer


def this_year() -> int:
    return today().year


def text_of(response) -> str:
    return response.get_data(as_text=True)


def section(page: str, kind: str) -> str:
    """The part of the results page listing one kind ('' when the kind found nothing)."""
    match = re.search(rf'<section[^>]*id="search-{kind}">(.*?)</section>', page, re.S)
    return match.group(1) if match else ""


@pytest.fixture
def books():
    """Two customers with invoices, a void (so a credit note), and payments with bank and provider references."""
    amina, first = billed_customer(start=today(), billing_day=today().day, name="Amina Otieno",
                                   account_number="CA0000001")
    SubscriptionFactory(customer=amina, pppoe_username="amina.home")
    baraka, second = billed_customer(start=today(), billing_day=today().day, name="Baraka Mwangi",
                                     account_number="CB0000002")
    note = invoice_service.void(second.id, "Wrong plan", today())
    bank, _ = payment_service.record_payment(amina.id, 1000, "bank_transfer", today(), today(),
                                             reference="TRX-884120")
    also, _ = payment_service.record_payment(amina.id, 500, "bank_transfer", today(), today(),
                                             reference="TRX-884199")
    mpesa, _ = payment_service.record_payment(baraka.id, 700, "provider", today(), today(), reference="QKL1234XYZ",
                                              provider="mpesa", provider_ref="ws_CO_0412")
    db.session.commit()
    return {"amina": amina, "baraka": baraka, "first": first, "second": second, "note": note, "bank": bank,
            "also": also, "mpesa": mpesa}


def test_a_whole_number_opens_its_invoice_or_credit_note(client, login, books):
    login("readonly")
    first, note = books["first"], books["note"]
    assert client.get(f"/search?q={first.number}").headers["Location"].endswith(f"/invoices/{first.id}")
    assert client.get(f"/search?q={note.number}").headers["Location"].endswith(f"/credit-notes/{note.id}")


@pytest.mark.parametrize("typed", ["inv-{year}-1", " INV-{year}-000001 ", "Inv-{year}-01"])
def test_a_short_or_lower_case_number_is_the_same_number(client, login, books, typed):
    login("readonly")
    response = client.get("/search", query_string={"q": typed.format(year=this_year())})
    assert response.headers["Location"].endswith(f"/invoices/{books['first'].id}")


def test_a_number_without_its_prefix_finds_both_kinds(client, login, books):
    year = this_year()
    login("readonly")
    page = text_of(client.get(f"/search?q={year}-1"))
    assert books["first"].number in section(page, "invoices")
    assert books["note"].number in section(page, "credit-notes")


def test_the_beginning_of_a_number_lists_every_match_grouped(client, login, books):
    year = this_year()
    login("readonly")
    page = text_of(client.get(f"/search?q=INV-{year}-00000"))
    invoices = section(page, "invoices")
    assert books["first"].number in invoices and books["second"].number in invoices
    assert f'href="/invoices/{books["first"].id}"' in invoices and "Baraka Mwangi" in invoices
    assert section(page, "credit-notes") == "" and section(page, "customers") == ""


def test_a_payment_reference_or_provider_reference_opens_the_payment(client, login, books):
    login("readonly")
    mpesa = books["mpesa"]
    for typed in ("QKL1234XYZ", "qkl1234xyz", "ws_CO_0412"):
        assert client.get("/search", query_string={"q": typed}).headers["Location"].endswith(
            f"/payments/{mpesa.id}"), typed
    page = text_of(client.get("/search?q=TRX-8841"))  # the beginning of two references
    payments = section(page, "payments")
    assert f'href="/payments/{books["bank"].id}"' in payments and f'href="/payments/{books["also"].id}"' in payments
    assert "$10.00" in payments and "$5.00" in payments


def test_customers_are_found_as_the_customer_list_finds_them(client, login, books):
    login("readonly")
    for typed in ("otieno", "CA0000001", "amina.home"):
        customers = section(text_of(client.get("/search", query_string={"q": typed})), "customers")
        assert f'href="/customers/{books["amina"].id}"' in customers, typed
    # One customer is a result page, not a redirect: the box finds people, and people have many pages.
    assert client.get("/search?q=otieno").status_code == 200


def test_a_number_that_also_matches_a_customer_is_not_opened_blindly(client, login, books):
    year = this_year()
    login("readonly")
    CustomerFactory(name=f"Shop INV-{year}-000001")
    page = client.get(f"/search?q=INV-{year}-000001")
    assert page.status_code == 200
    assert section(text_of(page), "customers") and section(text_of(page), "invoices")


def test_each_kind_is_bounded_and_links_to_the_whole_list(client, login):
    year = this_year()
    login("readonly")
    customer = CustomerFactory()
    db.session.add_all([Invoice(number=f"INV-{year}-{n:06d}", customer_id=customer.id, status="open",
                                issue_date=today(), due_date=today(), currency="USD", subtotal_cents=100,
                                tax_cents=0, total_cents=100) for n in range(1, 16)])
    db.session.commit()
    page = text_of(client.get(f"/search?q=INV-{year}"))
    invoices = section(page, "invoices")
    assert invoices.count("<code>INV-") == 10
    assert f"INV-{year}-000015" in invoices and f"INV-{year}-000006" in invoices  # the newest numbers first
    assert f'href="/invoices/?number=INV-{year}"' in invoices


def test_nothing_found_says_how_numbers_are_found(client, login, books):
    login("readonly")
    page = text_of(client.get("/search?q=CN-1999-000001"))
    assert "Nothing found" in page and "by their beginning" in page


def test_an_empty_search_shows_the_box(client, login):
    login("readonly")
    response = client.get("/search")
    assert response.status_code == 200 and 'name="q"' in text_of(response)


@pytest.mark.parametrize("typed", ["%", "_", "%%", "INV-%", "TRX-8841_0", "\\", "'; DROP TABLE invoices; --",
                                   "ğüş ünïcødé 王小明", "🚀"])
def test_wildcards_and_odd_text_match_only_themselves(client, login, books, typed):
    login("readonly")
    response = client.get("/search", query_string={"q": typed})
    assert response.status_code == 200, typed
    page = text_of(response)
    for kind in ("customers", "invoices", "credit-notes", "payments"):
        assert section(page, kind) == "", (typed, kind)


@pytest.mark.parametrize("query", ["q=%00", "q=INV%00", "q=" + "A" * 10_000_000, "q=" + "9" * 101, "q=%ff%fe"])
def test_hostile_searches_answer_4xx(client, login, books, query):
    login("readonly")
    response = client.get(f"/search?{query}")
    assert 400 <= response.status_code < 500


def count_queries(app, client, query_counter, url: str) -> int:
    with app.app_context(), query_counter() as statements:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(statements)


def test_each_search_runs_the_same_few_queries_however_much_matches(app, client, login, query_counter, books):
    login("readonly")
    year = this_year()
    urls = {f"/search?q=INV-{year}": 4, f"/search?q={year}-0": 5, "/search?q=a": 3, "/search?q=TRX": 3}
    few = {url: count_queries(app, client, query_counter, url) for url in urls}
    for n in range(30):
        customer = CustomerFactory(name=f"Alan {n}")
        db.session.add(Invoice(number=f"INV-{year}-{100 + n:06d}", customer_id=customer.id, status="open",
                               issue_date=today(), due_date=today(), currency="USD", subtotal_cents=100,
                               tax_cents=0, total_cents=100))
        db.session.add(Payment(customer_id=customer.id, amount_cents=100, currency="USD", method="cash",
                               reference=f"TRX-{n:04d}", received_on=today(), status="completed",
                               recorded_by="test"))
    db.session.commit()
    many = {url: count_queries(app, client, query_counter, url) for url in urls}
    # The user, then one query per kind the text can be: customers and payments always; invoices and credit
    # notes only for what reads as their number.
    assert few == many == urls, (few, many)


@pytest.mark.parametrize(("column", "typed", "prefix"), [
    (Invoice.__table__.c.number, "INV-2026-000001", "INV"), (Invoice.__table__.c.number, "INV-2026-00", "INV"),
    (CreditNote.__table__.c.number, "cn-2026-7", "CN"), (CreditNote.__table__.c.number, "CN-20", "CN"),
])
def test_numbers_are_found_through_their_unique_index(app, column, typed, prefix):
    if not is_postgres():
        pytest.skip("the plan of a PostgreSQL index")
    db.session.execute(text("SET LOCAL enable_seqscan = off"))  # an empty table would be scanned anyway
    stmt = select(column).where(number_condition(column, parse_number(typed), prefix))
    compiled = stmt.compile(db.engine, compile_kwargs={"literal_binds": True})
    plan = "\n".join(row[0] for row in db.session.execute(text(f"EXPLAIN {compiled}")))
    # A LIKE alone reads the whole index or table here (its pattern bounds no index scan in every collation); the
    # number's range is the scan's own condition.
    assert f"uq_{column.table.name}_number" in plan and "Index Cond" in plan and "Seq Scan" not in plan, plan
    db.session.rollback()


def test_a_number_reads_whole_short_or_as_its_beginning():
    assert parse_number("inv-2026-123").whole("INV") == "INV-2026-000123"
    assert parse_number("2026-7").whole("CN") == "CN-2026-000007" and parse_number("2026-7").prefix is None
    assert parse_number("INV-2026-00012").leading == "INV-2026-00012"
    assert parse_number("INV-2026-").leading == "INV-2026" and parse_number("INV-2026-").whole("INV") is None
    for not_a_number in ("Amina", "123", "INV 2026 1", "INV-20265-1", "INV-2026-1234567", "", "INV-2026-1-2",
                         "%", "INV-%"):
        assert parse_number(not_a_number) is None, not_a_number


def test_dates_and_money_read_as_the_other_pages_write_them(client, login, books):
    year = this_year()
    login("readonly")
    invoices = section(text_of(client.get(f"/search?q=INV-{year}")), "invoices")
    assert f"{today():%d %b %Y}" in invoices and f"${books['first'].total_cents / 100:,.2f}" in invoices


def test_documents_search_and_words_work_on_sqlite(tmp_path):
    """`make run` serves SQLite: the credit note pages, the search and the worded history work there too."""
    from flask_migrate import upgrade

    from isp_admin import create_app
    from tests.conftest import ROOT, FreshContextClient, app_config
    from tests.factories import PASSWORD, UserFactory

    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance"))
    app.test_client_class = FreshContextClient
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        try:
            UserFactory(email="till@isp.example", role="billing")
            customer, invoice = billed_customer(start=today(), billing_day=today().day, name="Wanjiru Kamau")
            note = invoice_service.void(invoice.id, "Wrong plan", today())
            payment, _ = payment_service.record_payment(customer.id, 900, "cash", today(), today(),
                                                        reference="TRX-5501")
            db.session.commit()
            client = app.test_client()
            assert client.post("/login", data={"email": "till@isp.example", "password": PASSWORD}).status_code == 302

            assert client.get(f"/search?q={invoice.number.lower()}").headers["Location"].endswith(
                f"/invoices/{invoice.id}")
            assert client.get(f"/search?q={note.number}").headers["Location"].endswith(f"/credit-notes/{note.id}")
            assert client.get("/search?q=trx-5501").headers["Location"].endswith(f"/payments/{payment.id}")
            assert client.get(f"/search?q=INV-{this_year()}-0").headers["Location"].endswith(
                f"/invoices/{invoice.id}")  # the beginning of one number only
            assert "Wanjiru Kamau" in section(client.get("/search?q=kamau").get_data(as_text=True), "customers")
            assert client.get("/search?q=%25").status_code == 200

            assert note.number in client.get(f"/credit-notes/?number={note.number}").get_data(as_text=True)
            page = html.unescape(client.get(f"/credit-notes/{note.id}").get_data(as_text=True))
            assert invoice.number in page and "Credit note issued for a void" in page
            sent = client.post(f"/credit-notes/{note.id}/send", follow_redirects=True).get_data(as_text=True)
            assert "written to the development outbox" in sent

            page = html.unescape(client.get(f"/customers/{customer.id}").get_data(as_text=True))
            history = " ".join(re.sub(r"<[^>]+>", " ", page.split(">History<", 1)[1]).split())
            assert "Payment recorded" in history and "Amount : $9.00" in history
        finally:
            db.session.remove()
            db.engine.dispose()


@pytest.mark.parametrize("typed", ["QKL1234XYZ", "qkl", "ws_CO_1"])
def test_payment_references_are_found_through_their_indexes(app, typed):
    if not is_postgres():
        pytest.skip("the plan of a PostgreSQL index")
    db.session.execute(text("SET LOCAL enable_seqscan = off"))
    p = Payment.__table__.c
    conditions = [p.reference.in_({typed, typed.upper()}), p.provider_ref == typed, starts_with(p.reference, typed)]
    compiled = select(p.id).where(or_(*conditions)).compile(db.engine, compile_kwargs={"literal_binds": True})
    plan = "\n".join(row[0] for row in db.session.execute(text(f"EXPLAIN {compiled}")))
    assert "ix_payments_reference" in plan and "ix_payments_provider_ref" in plan and "Seq Scan" not in plan, plan
    db.session.rollback()

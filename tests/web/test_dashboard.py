"""The dashboard that runs the business: each figure as computed by hand for a built world, each a link to the list
behind it, fresh the moment money moves, cached between, and in a fixed number of queries whatever the data."""
from __future__ import annotations

import html
import itertools
import re
from datetime import UTC, date, datetime, timedelta

from isp_admin.extensions import cache, db
from isp_admin.models import CoaRequest, Invoice, JobRun, Notification, Payment
from isp_admin.services.billing import invoices as invoice_service
from isp_admin.services.billing import payments as payment_service
from isp_admin.services.platform.clock import today
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.web.billing_world import billed_customer
from tests.web.test_security_headers import inline_code

NOON = datetime(2026, 1, 1, 12, tzinfo=UTC)
_numbers = itertools.count(1)


def text_of(response) -> str:
    return response.get_data(as_text=True)


def figure(page: str, element_id: str) -> tuple[str, str]:
    """The link (href) and text of the figure with this id."""
    match = re.search(r'<a [^>]*id="' + element_id + r'"[^>]*href="([^"]*)"[^>]*>([^<]*)</a>', page)
    assert match, f"no linked figure #{element_id}"
    return html.unescape(match.group(1)), match.group(2).strip()


def bucket(page: str, key: str) -> tuple[str, str, str]:
    """A row of 'Receivables by days past due': its link, invoice count and amount."""
    match = re.search(r'<tr data-bucket="' + key + r'">(.*?)</tr>', page, re.S)
    assert match, f"no bucket {key}"
    row = match.group(1)
    link = html.unescape(re.search(r'href="([^"]*)"', row).group(1))
    cells = re.findall(r'<td class="text-end">(?:<a[^>]*>)?([^<]*)<', row)
    return link, cells[0], cells[1]


def owed(customer, days_past_due: int, cents: int, *, paid: int = 0) -> None:
    """An issued invoice falling due `days_past_due` days before today, owing `cents - paid`."""
    due = today() - timedelta(days=days_past_due)
    issued = min(due, today()) - timedelta(days=14)
    db.session.add(Invoice(number=f"INV-2099-{next(_numbers):06d}", customer_id=customer.id,
                           status="overdue" if days_past_due > 0 else "open", issue_date=issued, due_date=due,
                           currency="USD", subtotal_cents=cents, tax_cents=0, total_cents=cents,
                           amount_paid_cents=paid))


def received(customer, cents: int, on: date, status: str = "completed") -> None:
    db.session.add(Payment(customer_id=customer.id, amount_cents=cents, currency="USD", method="cash",
                           received_on=on, status=status, recorded_by="desk@isp.example",
                           reversed_at=NOON if status == "reversed" else None))


def test_every_figure_is_the_hand_computed_one_and_links_to_its_list(client, login):
    login("readonly")  # the read-only role sees the whole dashboard ("view")
    day, month_start = today(), today().replace(day=1)
    ann, ben = CustomerFactory(name="Ann"), CustomerFactory(name="Ben")
    for days, cents in ((-3, 1_000), (0, 2_000), (1, 10), (30, 20), (31, 40), (60, 80), (61, 160), (90, 320),
                        (91, 640), (365, 1_280)):
        owed(ann if days < 31 else ben, days, cents)
    owed(ben, 5, 5_000, paid=4_000)  # part-paid: 10.00 still owed, 1–30 days
    received(ann, 700, day)
    received(ann, 9_000, day, status="reversed")  # bounced: never collected
    received(ben, 50, day - timedelta(days=day.day))  # the last day of last month
    if day.day > 1:
        received(ben, 300, month_start)  # this month, not today
    db.session.commit()

    page = text_of(client.get("/"))

    assert figure(page, "receivables") == ("/reports/aging", "$65.50")
    assert figure(page, "overdue") == ("/invoices/?status=overdue", "$35.50")
    assert "11 open invoices, 2 customers" in page and "9 invoices past due" in page
    assert bucket(page, "current") == ("/invoices/?status=open", "2", "$30.00")
    assert bucket(page, "days_1_30") == ("/invoices/?overdue_days=1-30", "3", "$10.30")
    assert bucket(page, "days_31_60") == ("/invoices/?overdue_days=31-60", "2", "$1.20")
    assert bucket(page, "days_61_90") == ("/invoices/?overdue_days=61-90", "2", "$4.80")
    assert bucket(page, "days_over_90") == ("/invoices/?overdue_days=91-", "2", "$19.20")
    iso, first = day.isoformat(), month_start.isoformat()
    assert figure(page, "collected-today") == (f"/payments/?received_from={iso}&received_to={iso}", "$7.00")
    assert figure(page, "collected-month") == (f"/payments/?received_from={first}&received_to={iso}",
                                               "$10.00" if day.day > 1 else "$7.00")
    assert figure(page, "failed-notifications") == ("/billing/notifications/?status=failed", "0")
    assert figure(page, "coa-failures") == ("/network/?status=failed", "0")
    assert figure(page, "mismatches") == ("/network/mismatches", "not checked yet")
    assert figure(page, "non-payment") == ("/customers/?status=suspended&reason=non_payment", "0")
    assert 'id="run-failures"' not in page  # that alert is for those who run billing


def test_operations_show_the_last_nightly_run_and_what_failed(client, login):
    login("support")
    customer = CustomerFactory(status="suspended")
    SubscriptionFactory(customer=customer, status="suspended", suspension_reason="non_payment")
    run = JobRun(kind="nightly", as_of=date(2026, 3, 1), status="partial", triggered_by="system", started_at=NOON,
                 finished_at=NOON + timedelta(minutes=2), counts={"failed_customers": 1}, error="one left out")
    check = JobRun(kind="network_reconcile", as_of=date(2026, 3, 1), status="succeeded", triggered_by="system",
                   started_at=NOON, finished_at=NOON, counts={"stale_session": 1, "address_conflict": 1})
    db.session.add_all([run, check])
    for status in ("failed", "failed", "failed", "sent"):
        db.session.add(Notification(customer_id=customer.id, kind="reactivation", subject="Hi", status=status))
    for n, status in enumerate(("failed", "failed", "pending")):
        db.session.add(CoaRequest(kind="disconnect", reason="change", status=status, nas_address="10.0.0.1",
                                  acct_unique_id=f"session-{n}"))
    db.session.commit()

    page = text_of(client.get("/"))

    nightly = page.split('id="last-nightly"', 1)[1].split("</li>", 1)[0]
    assert f'href="/billing/jobs/{run.id}">for 01 Mar 2026</a>' in nightly and ">partial</span>" in nightly
    assert f'href="/billing/jobs/{run.id}#job-failures">1 left out</a>' in nightly
    assert "finished 2026-01-01 12:02 UTC" in nightly
    assert figure(page, "failed-notifications") == ("/billing/notifications/?status=failed", "3")
    assert figure(page, "coa-failures") == ("/network/?status=failed", "2") and "(1 pending)" in page
    assert figure(page, "mismatches") == ("/network/mismatches", "2")
    assert figure(page, "non-payment") == ("/customers/?status=suspended&reason=non_payment", "1")
    # The links lead to pages that answer, filtered as promised.
    assert client.get("/billing/notifications/?status=failed").status_code == 200
    assert client.get("/network/?status=failed").status_code == 200
    assert client.get(f"/billing/jobs/{run.id}").status_code == 200


def test_mrr_and_its_trend_are_drawn_without_script_or_inline_style(client, login):
    login()
    customer, invoice = billed_customer(price=3000, start=today().replace(day=1))  # a whole month: 30.00
    SubscriptionFactory(plan=PlanFactory(monthly_price_cents=2000), customer=CustomerFactory())

    page = text_of(client.get("/"))

    assert re.search(r'id="mrr">\$50\.00<', page)
    assert "from 2 active subscriptions" in page
    chart = page.split('id="mrr-chart"', 1)[1].split("</svg>", 1)[0]
    assert chart.count("<rect") == 12
    assert inline_code(page) == []  # no style attribute, no inline script: the CSP would block them
    month = today().strftime("%Y-%m")
    assert re.search(r'data-month="' + month + r'"><td>[^<]*\(so far\)</td><td>\$30\.00</td>', page)


def test_a_fresh_install_shows_zeros_and_says_what_fills_them(client, login):
    login("billing")

    response = client.get("/")

    page = text_of(response)
    assert response.status_code == 200
    assert figure(page, "receivables")[1] == figure(page, "overdue")[1] == "$0.00"
    assert figure(page, "collected-today")[1] == figure(page, "collected-month")[1] == "$0.00"
    assert 'id="getting-started"' in page and 'href="/plans/new"' in page and 'href="/customers/new"' in page
    assert 'id="aging-empty"' in page and 'id="trend-empty"' in page and "No plans yet" in page
    assert "none yet" in page.split('id="last-nightly"', 1)[1].split("</li>", 1)[0]
    assert re.search(r'id="mrr">\$0\.00<', page)


def test_money_that_moves_shows_at_once(client, login):
    login("billing")
    start = today() - timedelta(days=40)  # a bill date: a whole month, due (and overdue) since 26 days
    customer, invoice = billed_customer(price=3000, tax_bp=0, start=start, billing_day=start.day)
    owed_before = figure(text_of(client.get("/")), "receivables")[1]  # now cached
    assert owed_before == "$30.00" and figure(text_of(client.get("/")), "overdue")[1] == "$30.00"

    payment, _ = payment_service.record_payment(customer.id, 1_000, "cash", today(), today())
    db.session.commit()
    page = text_of(client.get("/"))
    assert figure(page, "collected-today")[1] == "$10.00"
    assert figure(page, "receivables")[1] == "$20.00"

    payment_service.reverse_payment(payment.id, "bounced", today())
    db.session.commit()
    page = text_of(client.get("/"))
    assert figure(page, "collected-today")[1] == "$0.00" and figure(page, "receivables")[1] == owed_before

    billed_customer(price=2000, tax_bp=0, start=today(), billing_day=today().day)
    assert figure(text_of(client.get("/")), "receivables")[1] == "$50.00"

    invoice_service.void(invoice.id, "billed in error", today())
    db.session.commit()
    assert figure(text_of(client.get("/")), "receivables")[1] == "$20.00"


def test_a_payment_recorded_in_the_page_shows_on_the_next_view(client, login):
    login("billing")
    customer, invoice = billed_customer(price=3000, tax_bp=0, start=today(), billing_day=today().day)
    assert figure(text_of(client.get("/")), "collected-today")[1] == "$0.00"

    response = client.post("/payments/new", data={"customer_id": customer.id, "idempotency_key": "dash-1",
                                                  "amount_cents": "12.50", "method": "cash",
                                                  "received_on": today().isoformat(), "invoice_id": ""})
    assert response.status_code == 302, text_of(response)[:500]

    page = text_of(client.get("/"))
    assert figure(page, "collected-today")[1] == "$12.50" and figure(page, "receivables")[1] == "$17.50"


def build(size: int) -> None:
    """`size` customers, each with a plan, a subscription, open and overdue invoices and payments, and failures."""
    for n in range(size):
        customer = CustomerFactory()
        SubscriptionFactory(customer=customer, plan=PlanFactory(monthly_price_cents=1000 + n))
        owed(customer, n % 120, 1000 + n)
        owed(customer, -n, 500)
        received(customer, 100 + n, today())
        received(customer, 200, today(), status="reversed")
        db.session.add(Notification(customer_id=customer.id, kind="reactivation", subject="Hi", status="failed"))
        db.session.add(JobRun(kind="nightly", as_of=today(), status="succeeded", triggered_by="system", counts={}))
    db.session.commit()


def count_queries(client, query_counter, *, cold: bool) -> int:
    if cold:
        cache.clear()
    with query_counter() as statements:
        assert client.get("/").status_code == 200
    return len(statements)


def test_the_dashboard_runs_a_fixed_number_of_queries_and_caches_the_money(app, client, login, query_counter):
    login("admin")
    build(2)
    small = (count_queries(client, query_counter, cold=True), count_queries(client, query_counter, cold=False))
    build(40)
    large = (count_queries(client, query_counter, cold=True), count_queries(client, query_counter, cold=False))

    assert small == large, "the dashboard's queries grow with the data"
    cold, warm = large
    assert warm < cold, "a second view should be served the money figures from the cache"
    assert cold - warm == 5 and warm <= 8, (cold, warm)  # five aggregates cached; the live reads stay few

    billed_customer(price=3000, start=today())  # issuing an invoice makes the cached figures stale
    assert count_queries(client, query_counter, cold=False) == cold


def test_the_dashboard_needs_a_signed_in_user(client):
    response = client.get("/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_a_later_delivery_or_network_check_does_not_hide_what_the_nightly_run_left_out(client, login):
    login("billing")
    nightly = JobRun(kind="nightly", as_of=date(2026, 3, 1), status="succeeded", triggered_by="scheduler",
                     started_at=NOON, finished_at=NOON, counts={"failed_customers": 2})
    db.session.add(nightly)
    db.session.flush()
    # The quarter-hourly delivery of mail queued since, and the nightly network check, both finish later.
    db.session.add_all([
        JobRun(kind="deliver_notifications", as_of=date(2026, 3, 1), status="succeeded", triggered_by="scheduler",
               started_at=NOON, finished_at=NOON, counts={"sent": 4}),
        JobRun(kind="network_reconcile", as_of=date(2026, 3, 1), status="succeeded", triggered_by="scheduler",
               started_at=NOON, finished_at=NOON, counts={}),
    ])
    db.session.commit()

    page = text_of(client.get("/"))

    alert = page.split('id="run-failures"', 1)[1].split("</div>", 1)[0]
    assert "2 customers failed in the last run" in alert and "nightly for 2026-03-01" in alert
    assert f'href="/billing/jobs/{nightly.id}#job-failures"' in alert


def trend_month(page: str) -> str:
    """This month's amount in the MRR trend's table."""
    match = re.search(r'data-month="' + today().strftime("%Y-%m") + r'"><td>[^<]*</td><td>([^<]*)</td>', page)
    assert match, "this month is not in the trend"
    return match.group(1)


def test_the_trend_is_recomputed_when_invoices_are_issued_or_voided_not_when_money_is_paid(
        client, login, query_counter):
    login("billing")
    first = today().replace(day=1)
    ann, kept = billed_customer(price=3000, tax_bp=0, start=first)
    billed_customer(price=2000, tax_bp=0, start=first)
    assert trend_month(text_of(client.get("/"))) == "$50.00"
    with query_counter() as warm:
        client.get("/")

    payment_service.record_payment(ann.id, 500, "cash", today(), today())
    db.session.commit()
    with query_counter() as after_payment:
        page = text_of(client.get("/"))
    assert figure(page, "collected-today")[1] == "$5.00" and trend_month(page) == "$50.00"
    assert len(after_payment) == len(warm) + 4, "a payment recomputes the money figures, not the year of lines"

    invoice_service.void(kept.id, "billed in error", today())
    db.session.commit()
    assert trend_month(text_of(client.get("/"))) == "$20.00"

    billed_customer(price=4500, tax_bp=0, start=first)
    assert trend_month(text_of(client.get("/"))) == "$65.00"

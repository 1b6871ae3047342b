"""Customers a run left out are shown where staff look (issue 12 item 2): the run's page lists them with links and
reasons, the runs list counts them, the dashboard tells admin and billing staff; a clean run shows none of it."""
from __future__ import annotations

from datetime import date

from isp_admin.extensions import db
from isp_admin.jobs import tasks
from isp_admin.services.billing import run as billing
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

AS_OF = date(2026, 3, 1)


def run_with_one_bad_customer(monkeypatch):
    """A nightly run in process where planning raises for one customer's plan (price 1313); return run and sub."""
    good = PlanFactory(monthly_price_cents=3000, tax_rate_bp=0, setup_fee_cents=0)
    odd = PlanFactory(monthly_price_cents=1313, tax_rate_bp=0, setup_fee_cents=0)
    SubscriptionFactory(plan=good, customer=CustomerFactory(name="Ann Good"), start_date=date(2026, 1, 1),
                        billing_day=1, next_bill_date=AS_OF)
    bad = SubscriptionFactory(plan=odd, customer=CustomerFactory(name="Bob <b>Bad</b>"), start_date=date(2026, 1, 1),
                              billing_day=1, next_bill_date=AS_OF)
    db.session.commit()
    prorate = billing.prorate

    def broken(price, days, period_days):
        if price == 1313:
            raise ValueError("year 0 is out of range")
        return prorate(price, days, period_days)

    monkeypatch.setattr(billing, "prorate", broken)
    return tasks.run_inline("nightly", AS_OF, "test"), bad


def test_the_pages_show_who_the_last_run_left_out_and_why(client, login, monkeypatch):
    run, bad = run_with_one_bad_customer(monkeypatch)
    login("billing")

    page = client.get(f"/billing/jobs/{run.id}").get_data(as_text=True)
    failures = page.split('id="job-failures"', 1)[1].split("</ul>", 1)[0]
    assert "1 customer left out" in failures
    assert f'<a href="/customers/{bad.customer_id}">Bob &lt;b&gt;Bad&lt;/b&gt;</a>' in failures  # escaped
    assert "generate monthly invoices for 2026-03-01" in failures
    assert "<code>ValueError</code>: year 0 is out of range" in failures
    step = client.get(f"/billing/jobs/{run.id + 1}").get_data(as_text=True)  # the billing step's own page
    assert 'id="job-failures"' in step

    listing = client.get("/billing/jobs/").get_data(as_text=True)
    assert f'href="/billing/jobs/{run.id}#job-failures"' in listing and ">1 failed</a>" in listing

    dashboard = client.get("/").get_data(as_text=True)
    alert = dashboard.split('id="run-failures"', 1)[1].split("</div>", 1)[0]
    assert "1 customer failed in the last run" in alert and "nightly for 2026-03-01" in alert
    assert f'href="/billing/jobs/{run.id}#job-failures"' in alert


def test_support_staff_are_not_shown_the_dashboard_alert(client, login, monkeypatch):
    run_with_one_bad_customer(monkeypatch)
    login("support")
    assert 'id="run-failures"' not in client.get("/").get_data(as_text=True)


def test_a_clean_run_shows_no_failures_anywhere(client, login, monkeypatch):
    run, _ = run_with_one_bad_customer(monkeypatch)
    monkeypatch.undo()  # the planted fault is gone (the record corrected)
    later = tasks.run_inline("nightly", date(2026, 3, 2), "test")  # the bad customer is billed now: clean
    login("admin")

    assert 'id="run-failures"' not in client.get("/").get_data(as_text=True)
    assert 'id="job-failures"' not in client.get(f"/billing/jobs/{later.id}").get_data(as_text=True)
    listing = client.get("/billing/jobs/").get_data(as_text=True)
    assert listing.count('data-role="failed-customers"') == 1  # the earlier run keeps its badge, the clean one none

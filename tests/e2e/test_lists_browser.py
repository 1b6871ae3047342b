"""The lists in a real browser: a filtered list, every matching row chosen, the bulk preview, confirm, the result;
the CSV download; the selection without JavaScript; sorting and page numbers; and no overflow on a phone."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import Subscription
from tests.e2e.test_browser import CSP_WORDS, RECORD_CSP_VIOLATIONS
from tests.factories import PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.browser


@pytest.fixture
def plans(live_app):
    """Four customers on Fibre, two on Home; one name a spreadsheet would run as a formula."""
    fibre, home = PlanFactory(name="Fibre 100"), PlanFactory(name="Home 20")
    for name in ("Ann Fibre", "Ben Fibre", "Cat Fibre", "=HYPERLINK(\"http://x.example\",\"Dan\")"):
        SubscriptionFactory(customer=CustomerFactory(name=name), plan=fibre)
    for name in ("Eve Home", "Fay Home"):
        SubscriptionFactory(customer=CustomerFactory(name=name), plan=home)
    db.session.commit()
    return {"fibre": fibre, "home": home}


def statuses(plan) -> list[str]:
    db.session.rollback()
    return list(db.session.scalars(select(Subscription.status).where(Subscription.plan_id == plan.id)))


def watch(page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" or any(w in m.text for w in CSP_WORDS) else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.context.add_init_script(RECORD_CSP_VIOLATIONS)
    return problems


def test_a_filtered_list_every_match_chosen_previewed_confirmed_and_done(page, sign_in, plans):
    problems = watch(page)
    sign_in(UserFactory(role="support"))
    page.goto(f"/customers/?plan={plans['fibre'].id}")
    expect(page.locator("#result-count")).to_have_text("4 matching customers")

    page.get_by_label("Select every row on this page").check()  # the script ticks each row
    expect(page.locator("[data-role=selected-count]")).to_have_text("4 chosen on this page")
    page.get_by_label("Select all 4 matching customers").check()
    expect(page.locator("[data-role=selected-count]")).to_have_text("All matching rows chosen")
    page.get_by_role("button", name="Suspend service…").click()

    expect(page.get_by_role("heading", name="Suspend service: 4 customers")).to_be_visible()
    expect(page.locator('[data-outcome="suspended"] strong')).to_have_text("4")
    expect(page.locator("#bulk-samples")).to_contain_text("Ann Fibre")
    assert statuses(plans["fibre"]) == ["active"] * 4  # a preview changes nothing
    page.get_by_role("button", name="Suspend service (4)").click()

    expect(page.get_by_role("heading", name="Suspend service: done")).to_be_visible()
    expect(page.locator('#bulk-result [data-outcome="suspended"] strong')).to_have_text("4")
    assert statuses(plans["fibre"]) == ["suspended"] * 4
    assert statuses(plans["home"]) == ["active"] * 2
    assert page.evaluate("window.__cspViolations") == [] and problems == []


def test_from_the_dashboard_to_an_aging_bucket_reminders_for_all_of_it_and_its_csv(page, sign_in, live_app):
    from tests.support.smtp import outbox_messages
    from tests.web.test_lists import issued

    late = [issued(CustomerFactory(name=f"Late {n}"), 12, cents=1000 + n) for n in range(3)]
    issued(CustomerFactory(name="Later"), 45)
    problems = watch(page)
    sign_in(UserFactory(role="billing"))
    page.goto("/")
    page.locator('#aging tr[data-bucket] a[href*="overdue_days=1-30"]').first.click()  # the dashboard's link
    expect(page.locator("#result-count")).to_have_text("3 matching invoices")
    page.get_by_label("Select all 3 matching invoices").check()
    page.get_by_role("button", name="Send reminders…").click()
    expect(page.locator('[data-outcome="reminded"] strong')).to_have_text("3")
    page.get_by_role("button", name="Send reminders (3)").click()
    expect(page.locator('#bulk-result [data-outcome="reminded"] strong')).to_have_text("3")
    subjects = [m["Subject"] for m in outbox_messages(live_app)]
    assert sorted(s for s in subjects if "overdue" in s) == sorted(f"Your invoice {i.number} is overdue" for i in late)

    page.get_by_role("link", name="Back to the invoices").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text("utf-8-sig"))))
    assert sorted(row[0] for row in rows[1:]) == sorted(i.number for i in late)
    assert page.evaluate("window.__cspViolations") == [] and problems == []


def test_the_csv_export_downloads_the_filtered_rows_formula_safe(page, sign_in, plans):
    sign_in(UserFactory(role="readonly"))
    page.goto(f"/customers/?plan={plans['fibre'].id}&sort=-name")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    assert re.fullmatch(r"customers-\d{4}-\d{2}-\d{2}\.csv", download.value.suggested_filename)
    content = Path(download.value.path()).read_bytes().decode("utf-8")
    assert content.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(content[1:])))
    assert [row[1] for row in rows[1:]] == ["Cat Fibre", "Ben Fibre", "Ann Fibre",
                                            "'=HYPERLINK(\"http://x.example\",\"Dan\")"]


def test_ticked_rows_post_without_javascript(browser, live_server, plans):
    context = browser.new_context(base_url=live_server, java_script_enabled=False)
    try:
        page = context.new_page()
        user = UserFactory(role="billing")
        page.goto("/login")
        page.get_by_label("Email").fill(user.email)
        page.get_by_label("Password", exact=True).fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.goto("/customers/?sort=name")
        page.get_by_label("Select Eve Home").check()
        page.get_by_label("Select Ann Fibre").check()
        page.get_by_role("button", name="Suspend service…").click()
        expect(page.get_by_role("heading", name="Suspend service: 2 customers")).to_be_visible()
        page.get_by_role("button", name="Suspend service (2)").click()
        expect(page.locator('#bulk-result [data-outcome="suspended"] strong')).to_have_text("2")
        assert sorted(statuses(plans["fibre"])) == ["active"] * 3 + ["suspended"]
        assert sorted(statuses(plans["home"])) == ["active", "suspended"]
    finally:
        context.close()


def test_headers_sort_and_page_numbers_lead_on_keeping_the_filter(page, sign_in, plans):
    sign_in(UserFactory(role="readonly"))
    page.goto(f"/customers/?plan={plans['fibre'].id}&size=2")
    page.get_by_role("link", name=re.compile(r"^Name \(sorted ascending\)$")).click()
    expect(page).to_have_url(re.compile(r"sort=-name"))  # the list was by name: the header turns it round
    page.get_by_role("link", name="Page 2").click()
    expect(page.locator("#page-of")).to_have_text("Page 2 of 2")
    assert f"plan={plans['fibre'].id}" in page.url and "sort=-name" in page.url
    expect(page.locator("table tbody tr")).to_have_count(2)
    expect(page.locator("table tbody")).to_contain_text("Ann Fibre")


@pytest.mark.parametrize("path", ["/customers/", "/invoices/", "/payments/"])
def test_the_lists_fit_a_phone_screen(page, sign_in, plans, path):
    from isp_admin.services.billing import payments as payment_service
    from isp_admin.services.platform.clock import today
    from tests.web.test_lists import issued

    customer = CustomerFactory(name="A customer with a rather long name indeed", email="long.address@mail.example")
    issued(customer, 12)
    payment_service.record_payment(customer.id, 250, "bank_transfer", today(), today(), reference="REF-" + "9" * 30)
    db.session.commit()
    problems = watch(page)
    page.set_viewport_size({"width": 375, "height": 800})
    sign_in(UserFactory(role="billing"))
    page.goto(path)
    expect(page.locator("#export-csv")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{path} is {overflow}px wider than the screen"
    assert page.evaluate("window.__cspViolations") == [] and problems == []

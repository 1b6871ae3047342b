"""The report charts draw in a real browser under the strict CSP, and the tables stay when JavaScript is off."""
from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from isp_admin.extensions import db
from isp_admin.services.billing import invoices
from isp_admin.services.platform.clock import today
from tests.e2e.test_browser import CSP_WORDS, RECORD_CSP_VIOLATIONS
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.browser

CHART_PAGES = ["/reports/aging", "/reports/invoiced-collected", "/reports/mrr"]


@pytest.fixture
def figures(live_app):
    """An overdue invoice and an active subscription, so every chart has something to draw."""
    customer = CustomerFactory(name="Overdue Customer")
    SubscriptionFactory(customer=customer, plan=PlanFactory(name="Home 49", monthly_price_cents=4900))
    draft = invoices.create_draft(customer.id, [{"description": "Router", "quantity": 1, "unit_price_cents": 7500,
                                                 "tax_rate_bp": 0}], today() - timedelta(days=40))
    invoices.issue(draft.id, today() - timedelta(days=40))
    db.session.commit()


def test_report_charts_draw_without_csp_violations(page, sign_in, figures):
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" or any(w in m.text for w in CSP_WORDS) else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.context.add_init_script(RECORD_CSP_VIOLATIONS)
    sign_in(UserFactory(role="readonly"))
    page.get_by_role("navigation").get_by_role("link", name="Reports").click()
    expect(page.get_by_role("heading", name="Reports")).to_be_visible()
    for path in CHART_PAGES:
        page.goto(path)
        canvas = page.locator("canvas[data-chart]")
        expect(canvas).to_have_attribute("data-chart-ready", "true")
        box = canvas.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 50, (path, box)
        assert page.evaluate("window.__cspViolations") == [], path
    assert problems == []


def test_report_tables_work_without_javascript(browser, live_server, figures):
    context = browser.new_context(base_url=live_server, java_script_enabled=False)
    try:
        page = context.new_page()
        user = UserFactory(role="readonly")
        page.goto("/login")
        page.get_by_label("Email").fill(user.email)
        page.get_by_label("Password", exact=True).fill("correct horse battery staple")
        page.get_by_role("button", name="Sign in").click()
        page.goto("/reports/aging")
        expect(page.locator("#aging-buckets")).to_contain_text("$75.00")
        expect(page.locator("#aging-customers")).to_contain_text("Overdue Customer")
        page.goto("/reports/mrr")
        expect(page.locator("#mrr-total")).to_have_text("$49.00")
    finally:
        context.close()

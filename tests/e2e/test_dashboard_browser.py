"""The dashboard in a real browser: it fits a laptop and a phone without sideways scrolling, its charts draw under
the CSP (nothing blocked), and a figure leads to the list behind it."""
from __future__ import annotations

import os
from datetime import timedelta

import pytest
from playwright.sync_api import expect

from isp_admin.extensions import db
from isp_admin.models import Invoice, Payment
from isp_admin.services.platform.clock import today
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory
from tests.web.billing_world import billed_customer

pytestmark = pytest.mark.browser

# Where to keep what the browser saw, for a person to look at (unset: nowhere).
SHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")
WIDTHS = {"laptop": {"width": 1366, "height": 900}, "phone": {"width": 375, "height": 800}}


def busy_business() -> None:
    """Large amounts and long names: what makes a card or a table too wide."""
    for n, days in enumerate((-2, 0, 5, 45, 75, 400)):
        customer = CustomerFactory(name=f"Wanjiru Kamau-Otieno Enterprises Ltd {n}")
        SubscriptionFactory(customer=customer, plan=PlanFactory(name=f"Fibre Business Unlimited {n}",
                                                                monthly_price_cents=1_234_567))
        due = today() - timedelta(days=days)
        db.session.add(Invoice(number=f"INV-2099-{n:06d}", customer_id=customer.id, status="overdue" if days > 0
                               else "open", issue_date=min(due, today()) - timedelta(days=14), due_date=due,
                               currency="USD", subtotal_cents=98_765_432, tax_cents=0, total_cents=98_765_432))
        db.session.add(Payment(customer_id=customer.id, amount_cents=12_345_678, currency="USD", method="cash",
                               received_on=today(), status="completed", recorded_by="desk@isp.example"))
    db.session.commit()
    billed_customer(price=4_999_900, start=today().replace(day=1))  # a month billed: the trend has a bar


@pytest.mark.parametrize("size", WIDTHS)
def test_the_dashboard_fits_the_screen_and_draws_under_the_csp(page, sign_in, size):
    busy_business()
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text) if message.type == "error" else None)
    page.set_viewport_size(WIDTHS[size])
    sign_in(UserFactory(role="readonly"))
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px at {size} width"
    chart = page.locator("#mrr-chart").bounding_box()
    assert chart and 0 < chart["width"] <= WIDTHS[size]["width"] and chart["height"] > 40
    if size == "laptop":  # a phone hides the share bars, to leave the amounts room
        bars = page.locator("#aging svg rect").evaluate_all("(rects) => rects.map((r) => r.getBBox().width)")
        assert max(bars) == 100 and min(bars) >= 0  # the bars drew from their attributes
    assert not blocked, blocked  # a CSP violation is reported on the console
    if SHOTS:
        page.screenshot(path=os.path.join(SHOTS, f"dashboard-{size}.png"), full_page=True)


def test_a_figure_leads_to_its_filtered_list(page, sign_in):
    busy_business()
    sign_in(UserFactory(role="billing"))

    page.locator("#overdue").click()

    expect(page).to_have_url("/invoices/?status=overdue")
    expect(page.get_by_role("heading", name="Invoices")).to_be_visible()

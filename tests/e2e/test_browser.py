"""Staff use the panel in a real browser: sign in, add a customer and a subscription, find them again."""
from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Customer, Subscription
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.browser

# Chromium words CSP reports as errors today; earlier versions said "Refused to …", possibly as a warning.
CSP_WORDS = ("Refused to", "Content Security Policy", "Content-Security-Policy")
# Recorded from the first script the page runs, so a violation shows even without a console message.
RECORD_CSP_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


def fresh(statement):
    """Run a query on data the live server committed (the test's session must not answer from its cache)."""
    db.session.expire_all()
    return db.session.execute(statement)


def test_an_admin_adds_a_customer_and_a_subscription_then_finds_them_by_name_and_pppoe(page, sign_in):
    admin = UserFactory(role="admin", name="Ada Admin")
    plan = PlanFactory(name="Fiber 200", code="FIBER-200", active=True)
    PlanFactory(name="Legacy DSL", code="DSL-8", active=False)
    CustomerFactory(name="Kofi Mensah")  # a neighbour the search must leave out

    sign_in(admin)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    # Create the customer through the form.
    page.get_by_role("navigation").get_by_role("link", name="Customers", exact=True).click()
    page.get_by_role("link", name="New customer").click()
    page.get_by_label("Name").fill("Wanjiru Achieng-Otieno")
    page.get_by_label("Email").fill("wanjiru@mail.example")
    page.get_by_label("Phone").fill("+254 722 123 456")
    page.get_by_label("Service address").fill("4 Harbour Road, Mombasa")
    page.get_by_role("button", name="Save").click()

    customer = fresh(select(Customer).where(Customer.name == "Wanjiru Achieng-Otieno")).scalar_one()
    expect(page.get_by_role("alert")).to_contain_text(f"Customer {customer.account_number} created.")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Wanjiru Achieng-Otieno")

    # Find it from the list page by part of its name, and open it.
    page.get_by_role("navigation").get_by_role("link", name="Customers", exact=True).click()
    expect(page.locator("table tbody tr")).to_have_count(2)
    page.get_by_role("main").get_by_label("Search", exact=True).fill("achieng-ot")
    page.get_by_role("button", name="Find").click()
    rows = page.locator("table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(customer.account_number)
    expect(page.locator("#result-count")).to_have_text("1 matching customer")
    rows.get_by_role("link", name="Wanjiru Achieng-Otieno").click()
    expect(page).to_have_url(re.compile(rf"/customers/{customer.id}$"))
    expect(page.locator("#subscriptions")).to_have_count(0)
    expect(page.get_by_text("No subscriptions yet.")).to_be_visible()

    # Add a subscription: only active plans are offered.
    page.get_by_role("link", name="Add subscription").click()
    plan_select = page.get_by_label("Plan")
    expect(plan_select.locator("option")).to_have_text([re.compile("Fiber 200")])
    plan_select.select_option(label=plan_select.locator("option").first.inner_text())
    page.get_by_label("Billing day").fill("20")
    page.get_by_label("PPPoE username").fill("wanjiru.achieng")
    page.get_by_role("button", name="Add subscription").click()

    expect(page.get_by_role("alert")).to_contain_text("Subscription added.")
    expect(page).to_have_url(re.compile(rf"/customers/{customer.id}$"))
    subscription_row = page.locator("#subscriptions tbody tr")
    expect(subscription_row).to_have_count(1)
    expect(subscription_row).to_contain_text("Fiber 200")
    expect(subscription_row).to_contain_text("wanjiru.achieng")
    expect(subscription_row.locator("td").nth(3)).to_have_text("20")
    history = page.locator(".card", has=page.get_by_text("History", exact=True))
    expect(history).to_contain_text("subscription.create")
    expect(history).to_contain_text("customer.create")
    expect(history).to_contain_text(admin.email)

    subscription = fresh(select(Subscription).where(Subscription.customer_id == customer.id)).scalar_one()
    assert (subscription.plan_id, subscription.pppoe_username, subscription.billing_day) == (
        plan.id, "wanjiru.achieng", 20)
    event = fresh(select(AuditEvent).where(AuditEvent.action == "subscription.create")).scalar_one()
    assert (event.customer_id, event.actor_label) == (customer.id, admin.email)

    # The navbar search (the global one) finds the customer by the PPPoE username.
    navbar_search = page.get_by_role("navigation").get_by_label("Search customers")
    navbar_search.fill("wanjiru.achieng")
    navbar_search.press("Enter")
    rows = page.locator("#search-customers table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("Wanjiru Achieng-Otieno")
    rows.get_by_role("link", name="Wanjiru Achieng-Otieno").click()
    expect(page).to_have_url(re.compile(rf"/customers/{customer.id}$"))


def test_the_main_pages_load_without_console_errors_or_csp_violations(page, sign_in):
    admin = UserFactory(role="admin")
    subscription = SubscriptionFactory(plan=PlanFactory(name="Home 25"), pppoe_username="grace.w",
                                       customer__name="Grace Wanjiru")
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" or any(w in m.text for w in CSP_WORDS) else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    page.context.add_init_script(RECORD_CSP_VIOLATIONS)

    sign_in(admin)
    pages = {
        "/": "Dashboard",
        "/customers/": "Customers",
        f"/customers/{subscription.customer_id}": "Grace Wanjiru",
        f"/subscriptions/{subscription.id}": "Home 25",
        "/plans/": "Plans",
        "/admin/users/": "Staff",
    }
    for path, heading in pages.items():
        response = page.goto(path)
        assert response.status == 200, path
        expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
        # Bootstrap's stylesheet applied, and app.js ran (it sets the CSP-safe bar widths on the dashboard).
        assert page.eval_on_selector(".navbar", "n => getComputedStyle(n).display") == "flex", path
        assert page.evaluate("window.__cspViolations") == [], path
        if path == "/":
            expect(page.locator("main")).to_contain_text("MRR")

    assert problems == []


def test_a_double_click_on_save_sends_one_post_and_creates_one_customer(page, sign_in, live_app, monkeypatch):
    sign_in(UserFactory(role="support"))
    page.goto("/customers/new")
    page.get_by_label("Name").fill("Double Click")
    # A slow server keeps the first post in flight while the second click lands, as on a busy day.
    serve = live_app.wsgi_app

    def slow_posts(environ, start_response):
        if environ["REQUEST_METHOD"] == "POST":
            time.sleep(0.4)
        return serve(environ, start_response)

    monkeypatch.setattr(live_app, "wsgi_app", slow_posts)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    box = page.get_by_role("button", name="Save").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    # The mouse, not locator.click(): a locator would wait for the first navigation and for an enabled button.
    page.mouse.click(x, y)
    page.wait_for_timeout(100)
    page.mouse.click(x, y)

    expect(page.get_by_role("alert")).to_contain_text("created.")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Double Click")
    page.wait_for_timeout(300)  # a second post, had one been sent, would have finished by now
    assert len(posts) == 1, posts
    assert fresh(select(func.count()).select_from(Customer)).scalar_one() == 1


def test_a_failed_sign_in_shows_the_generic_message_and_the_form_again(page, sign_in):
    user = UserFactory(role="admin", email="ops@isp.example")

    sign_in(user, password="not the password")

    expect(page.get_by_role("alert")).to_contain_text("Invalid email or password.")
    expect(page.get_by_label("Email")).to_have_value("ops@isp.example")
    expect(page.get_by_label("Password", exact=True)).to_have_value("")
    expect(page.get_by_role("button", name="Sign in")).to_be_enabled()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.get_by_role("heading", name="Sign in to ISP Admin")).to_be_visible()

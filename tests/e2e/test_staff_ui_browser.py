"""The staff's day in a real browser: the navbar on a laptop and a phone, keyboard users' first steps, the customer
page on a phone, staff states with unlock and resend, and the development mail viewer."""
from __future__ import annotations

import re
from datetime import date, timedelta

import pytest
from playwright.sync_api import expect

from isp_admin.extensions import db
from isp_admin.models.base import utcnow
from isp_admin.models.users import SignInThrottle
from isp_admin.services.billing import invoices
from tests.e2e.test_browser import RECORD_CSP_VIOLATIONS
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory

pytestmark = pytest.mark.browser

LAPTOP = {"width": 1366, "height": 800}
PHONE = {"width": 375, "height": 800}

# The navbar's visible top-level entries (dropdown menus excluded: they open below the bar).
NAVBAR_BOXES = """
() => [...document.querySelectorAll(
    '.navbar .navbar-brand, .navbar .navbar-nav > .nav-item, .navbar form[role=search], .navbar .navbar-account')]
  .filter((el) => el.offsetParent !== null && !el.closest('.dropdown-menu'))
  .map((el) => { const r = el.getBoundingClientRect(); return {text: el.innerText.trim(), top: r.top,
                                                                bottom: r.bottom}; })
"""


def navbar_height(page) -> float:
    """Return the rendered height of the staff navbar, in CSS pixels."""
    return page.locator("nav.navbar").bounding_box()["height"]


def test_the_navbar_fits_one_line_at_1366_and_folds_into_the_toggler_at_375(page, sign_in):
    # An admin sees every entry; a long name is what staff really have.
    admin = UserFactory(role="admin", name="Adaeze Okonkwo-Whitfield")
    page.set_viewport_size(LAPTOP)
    sign_in(admin)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()

    boxes = page.evaluate(NAVBAR_BOXES)
    assert len(boxes) >= 8, boxes
    brand = boxes[0]
    # One line: every entry sits on the brand's line, and the bar is no taller than one line of it.
    assert all(box["top"] < brand["bottom"] and box["bottom"] > brand["top"] for box in boxes), boxes
    assert navbar_height(page) <= (brand["bottom"] - brand["top"]) + 24, (navbar_height(page), boxes)
    # Nothing is lost: the less-used entries are one click away, in "More".
    page.get_by_role("navigation").get_by_role("button", name="More").click()
    expect(page.get_by_role("navigation").get_by_role("link", name="Staff")).to_be_visible()
    expect(page.get_by_role("navigation").get_by_role("link", name="Plans")).to_be_visible()

    page.set_viewport_size(PHONE)
    page.reload()
    toggler = page.get_by_role("button", name="Toggle navigation")
    expect(toggler).to_be_visible()
    expect(page.locator("#nav")).to_be_hidden()
    assert navbar_height(page) < 80
    toggler.click()
    expect(page.get_by_role("navigation").get_by_role("link", name="Customers", exact=True)).to_be_visible()


def test_the_first_tab_on_a_staff_page_reaches_the_skip_link_which_jumps_to_the_content(page, sign_in):
    sign_in(UserFactory(role="billing"))
    page.goto("/customers/")

    page.keyboard.press("Tab")

    skip = page.get_by_role("link", name="Skip to main content")
    expect(skip).to_be_focused()
    expect(skip).to_be_visible()  # hidden until focused, then shown
    box = skip.bounding_box()
    assert box["width"] > 40 and box["height"] > 10, box
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"#main$"))
    expect(page.locator("main#main")).to_be_focused()


def test_the_portal_pages_have_a_skip_link_too(page):
    page.goto("/portal/password-link")

    page.keyboard.press("Tab")

    expect(page.get_by_role("link", name="Skip to main content")).to_be_focused()
    expect(page.get_by_role("link", name="Skip to main content")).to_be_visible()


def test_the_sign_in_pages_put_the_cursor_in_the_first_field(page):
    page.goto("/login")
    expect(page.get_by_label("Email")).to_be_focused()

    page.goto("/portal/login")
    expect(page.get_by_label("Account number or email")).to_be_focused()


def test_the_customer_page_fits_a_phone(page, sign_in):
    long_word = "Wanjiru-Achieng-Otieno-Kamau-Njoroge"
    customer = CustomerFactory(name=f"{long_word} Holdings", email=f"{long_word.lower()}.accounts@example-isp.co.ke",
                               service_address=f"Plot {long_word}/Harbour-Road/Mombasa-Kenya-80100",
                               tax_id="P051234567890Q-VAT-REGISTRATION-2026", notes="Gate code 4410#")
    plan = PlanFactory(name="Fiber 1000 Business Unlimited", code="FIBER-1000-BIZ")
    SubscriptionFactory(customer=customer, plan=plan, pppoe_username=f"{long_word.lower()}.fiber1000",
                        static_ip="203.0.113.254")
    draft = invoices.create_draft(customer.id, [{"description": "Router", "quantity": 1, "unit_price_cents": 750000,
                                                 "tax_rate_bp": 1600}], date.today() - timedelta(days=40))
    invoices.issue(draft.id, date.today() - timedelta(days=40))
    db.session.commit()
    sign_in(UserFactory(role="admin"))
    page.set_viewport_size(PHONE)

    page.goto(f"/customers/{customer.id}")

    expect(page.get_by_role("heading", level=1)).to_contain_text(long_word)
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], widths


def test_an_admin_unlocks_a_locked_colleague_resends_an_invitation_and_reads_it_in_mail_dev(page, sign_in):
    admin = UserFactory(role="admin", name="Ada Admin")
    locked = UserFactory(name="Lee Locked", last_login_at=utcnow() - timedelta(days=1))
    UserFactory(name="Ivy Invited", email="ivy@isp.example")
    db.session.add(SignInThrottle(email=locked.email, client_address="192.0.2.9", failures=7,
                                  blocked_until=utcnow() + timedelta(minutes=10)))
    db.session.commit()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.context.add_init_script(RECORD_CSP_VIOLATIONS)
    page.set_viewport_size(LAPTOP)
    sign_in(admin)

    nav = page.get_by_role("navigation")
    nav.get_by_role("button", name="More").click()
    nav.get_by_role("link", name="Staff").click()
    locked_row = page.locator("#users tr", has_text="Lee Locked")
    locked_until = re.compile(r"locked until (\d{4}-\d\d-\d\d )?\d\d:\d\d UTC")  # dated when it ends tomorrow
    expect(locked_row.locator(".staff-status")).to_contain_text(locked_until)
    expect(locked_row.locator(".staff-status")).to_contain_text("Too many failed sign-ins (7)")
    invited_row = page.locator("#users tr", has_text="Ivy Invited")
    expect(invited_row.locator(".staff-status")).to_have_text(re.compile(r"^\s*invited\s+Never signed in\.\s*$"))

    locked_row.get_by_role("button", name="Unlock").click()
    expect(page.get_by_role("alert")).to_contain_text(f"Sign-in unlocked for {locked.email}.")
    expect(page).to_have_url(re.compile(r"/admin/users/$"))
    expect(page.locator("#users tr", has_text="Lee Locked").locator(".staff-status")).to_have_text(
        re.compile(r"^\s*active\s*$"))

    page.locator("#users tr", has_text="Ivy Invited").get_by_role("button", name="Resend invitation").click()
    expect(page.get_by_role("alert")).to_contain_text(
        "A new invitation for ivy@isp.example written to the development outbox (not sent) — open Mail (dev)")

    nav.get_by_role("button", name="More").click()
    nav.get_by_role("link", name="Mail (dev)").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Mail (dev)")
    first = page.locator("#outbox tbody tr").first
    expect(first).to_contain_text("ivy@isp.example")
    first.get_by_role("link", name="You have been invited to ISP Admin").click()
    expect(page.locator("#message-body")).to_contain_text("/reset-password/")
    expect(page.locator("#message-body")).to_contain_text("Hello Ivy Invited")
    assert page.evaluate("window.__cspViolations") == []
    assert problems == []

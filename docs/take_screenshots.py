"""Refresh docs/screenshots/: a throwaway SQLite app with demo data, photographed by headless Chromium.

Run from the repository root: `.venv/bin/python docs/take_screenshots.py`. Needs Debian's chromium at
/usr/bin/chromium; no Redis, no PostgreSQL, nothing downloaded. Nothing outside a temporary directory and
docs/screenshots/ is written.
"""
from __future__ import annotations

import os
import secrets
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1366, "height": 900}  # the laptop most staff have; the navbar must fit on one line
PHONE = {"width": 375, "height": 812}  # the portal is photographed as most subscribers see it
MAX_BYTES = 600_000  # larger full-page shots are cut to the first CLIP_HEIGHT pixels
CLIP_HEIGHT = 1800
ADMIN_EMAIL = "admin@example.com"

sys.path.insert(0, str(ROOT))


def configure_environment(workdir: Path) -> None:
    """Point the app at a fresh SQLite file in `workdir`, in development mode, without Redis."""
    os.environ.update({
        "APP_ENV": "development",
        "DATABASE_URL": f"sqlite:///{workdir / 'screenshots.sqlite3'}",
        "SECRET_KEY": secrets.token_hex(32),
        "LOG_LEVEL": "WARNING",
    })
    os.environ.pop("REDIS_URL", None)


def load_demo_data(app, password: str) -> dict:
    """Migrate, create staff and 300 demo customers, give one customer some history and another (who owes) a portal
    login with `password`; return their ids."""
    from flask_migrate import upgrade

    from isp_admin.extensions import db
    from isp_admin.services.identity import users as user_service
    from isp_admin.services.platform.audit import SYSTEM, Actor, acting_as
    from isp_admin.services.sample_data import generator as test_data

    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        with acting_as(SYSTEM):
            admin = user_service.create_user(ADMIN_EMAIL, "Ada Admin", "admin", password)
            for email, name, role in (("support@example.com", "Sam Support", "support"),
                                      ("billing@example.com", "Bea Billing", "billing"),
                                      ("auditor@example.com", "Ola Auditor", "readonly")):
                user_service.create_user(email, name, role)
            test_data.generate(300, seed=42)
        with acting_as(Actor("user", admin.id, admin.email, "127.0.0.1")):
            ids = make_history()
        with acting_as(SYSTEM):
            from isp_admin.services.platform.clock import today
            from isp_admin.services.sample_data.demo import bill_history, network_history

            bill_history(today())  # as `make run` does: paid and overdue invoices
            network_history(today())
            from isp_admin.services.portal import accounts as portal_accounts
            from isp_admin.services.sample_data.demo import portal_demo_customer

            portal_id, ids["portal_account"] = portal_demo_customer()
            portal_accounts.open_with_password(portal_id, password)
        db.session.commit()
        db.engine.dispose()
    return ids


def make_history() -> dict:
    """Edit a customer and its subscription the way staff would, so its History has entries."""
    from sqlalchemy import select

    from isp_admin.extensions import db
    from isp_admin.models import Customer, Plan, Subscription
    from isp_admin.services.customers import accounts as customer_service
    from isp_admin.services.customers import subscriptions as subscription_service
    from isp_admin.services.platform.clock import today

    sub = db.session.scalars(
        select(Subscription).join(Customer).where(Subscription.status == "active", Customer.status == "active")
        .order_by(Customer.name, Subscription.id).limit(1)
    ).one()
    customer_service.update_customer(sub.customer_id, notes="Prefers SMS reminders.\nGate code 4411.")
    subscription_service.suspend(sub.id, "vacation")
    subscription_service.resume(sub.id)
    fiber = db.session.scalars(select(Plan).where(Plan.active.is_(True)).order_by(Plan.download_mbps.desc())).first()
    subscription_service.add_subscription(sub.customer_id, fiber.id, today(), billing_day=1,
                                          pppoe_username="office-uplink-01")
    return {"customer_id": sub.customer_id, "subscription_id": sub.id}


def shoot(page, name: str, width: int = VIEWPORT["width"]) -> None:
    """Save a full-page PNG of `page`, cut to the first CLIP_HEIGHT pixels if it is too large."""
    path = OUT / name
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    if path.stat().st_size > MAX_BYTES:
        clip = {"x": 0, "y": 0, "width": width, "height": CLIP_HEIGHT}
        page.screenshot(path=str(path), full_page=True, clip=clip, animations="disabled")
    print(f"  {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KB)")


def take_screenshots(base_url: str, password: str, ids: dict) -> None:
    """Sign in through the form and photograph each page."""
    from playwright.sync_api import expect, sync_playwright

    from isp_admin.devserver import CHROMIUM, CHROMIUM_ARGS

    OUT.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(base_url=base_url, viewport=VIEWPORT).new_page()
        page.goto("/login")
        shoot(page, "login.png")
        page.get_by_label("Email").fill(ADMIN_EMAIL)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
        shoot(page, "dashboard.png")
        pages = [
            ("/customers/", "customers.png", "table tbody tr"),
            ("/customers/?q=otieno", "customers-search.png", "table tbody tr"),
            (f"/customers/{ids['customer_id']}", "customer.png", "#subscriptions tbody tr"),
            (f"/subscriptions/{ids['subscription_id']}", "subscription.png", "dl"),
            ("/plans/", "plans.png", "#plans tbody tr"),
            ("/admin/users/", "staff.png", "#users tbody tr"),
            ("/billing/run", "billing-run.png", "#run-summary"),
            ("/network/sessions", "network-online.png", "h1"),
            ("/network/mismatches", "network-mismatches.png", "h1"),
            ("/network/routers", "network-routers.png", "h1"),
            ("/network/settings", "network-policy.png", "h1"),
            ("/invoices/?status=overdue", "invoices-overdue.png", "table tbody tr"),
            ("/payments/", "payments.png", "table tbody tr"),
            ("/credit-notes/", "credit-notes.png", "h1"),
            ("/search?q=INV", "search.png", "h1"),
            ("/imports/", "imports.png", "h1"),
            ("/billing/jobs/", "jobs.png", "h1"),
            ("/dev/mail/", "dev-mail.png", "h1"),
        ]
        for path, name, content in pages:
            response = page.goto(path)
            if response.status != 200:
                raise SystemExit(f"{path} answered {response.status}")
            expect(page.locator(content).first).to_be_visible()
            if page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1"):
                raise SystemExit(f"{path} is wider than {VIEWPORT['width']} px")
            shoot(page, name)
        take_phone_screenshots(browser, base_url, password, ids)
        take_portal_screenshots(browser, base_url, password, ids["portal_account"])
        browser.close()


def take_phone_screenshots(browser, base_url: str, password: str, ids: dict) -> None:
    """The staff pages most used away from a desk, at a phone's width: nothing may scroll sideways."""
    from playwright.sync_api import expect

    page = browser.new_context(base_url=base_url, viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    page.goto("/login")
    page.get_by_label("Email").fill(ADMIN_EMAIL)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.goto("/invoices/?status=overdue")
    invoice_path = page.locator("main table tbody a[href*='/invoices/']").first.get_attribute("href")
    for path, name in (("/", "phone-dashboard.png"), (f"/customers/{ids['customer_id']}", "phone-customer.png"),
                       (invoice_path, "phone-invoice.png"), ("/customers/", "phone-customers.png")):
        response = page.goto(path)
        if response.status != 200:
            raise SystemExit(f"{path} answered {response.status}")
        if page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1"):
            raise SystemExit(f"{path} is wider than a phone ({PHONE['width']} px)")
        shoot(page, name, PHONE["width"])
    page.context.close()


def take_portal_screenshots(browser, base_url: str, password: str, account_number: str) -> None:
    """Sign in to the subscriber portal at a phone's width and photograph its pages."""
    from playwright.sync_api import expect

    page = browser.new_context(base_url=base_url, viewport=PHONE, is_mobile=True, has_touch=True).new_page()
    page.goto("/portal/login")
    shoot(page, "portal-login.png", PHONE["width"])
    page.get_by_label("Account number or email").fill(account_number)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("main h1").first).to_be_visible()
    shoot(page, "portal-dashboard.png", PHONE["width"])
    for path, name in (("/portal/invoices", "portal-invoices.png"), ("/portal/pay", "portal-pay.png"),
                       ("/portal/payments", "portal-payments.png"), ("/portal/statement", "portal-statement.png"),
                       ("/portal/usage", "portal-usage.png"), ("/portal/plan-change", "portal-plan-change.png"),
                       ("/portal/profile", "portal-profile.png")):
        response = page.goto(path)
        if response.status != 200:
            raise SystemExit(f"{path} answered {response.status}")
        if page.evaluate("document.documentElement.scrollWidth > window.innerWidth + 1"):
            raise SystemExit(f"{path} is wider than a phone ({PHONE['width']} px)")
        shoot(page, name, PHONE["width"])
    page.goto("/portal/invoices")
    page.locator("main a[href*='/portal/invoices/']").first.click()
    expect(page.locator("main h1").first).to_be_visible()
    shoot(page, "portal-invoice.png", PHONE["width"])
    page.context.close()


def main() -> None:
    """Build the throwaway environment, serve it, and take the screenshots."""
    with tempfile.TemporaryDirectory(prefix="isp-admin-screenshots-") as workdir:
        configure_environment(Path(workdir))
        from isp_admin import create_app
        from isp_admin.devserver import serve_in_background

        app = create_app()
        password = secrets.token_urlsafe(18)
        ids = load_demo_data(app, password)
        with serve_in_background(app) as base_url:
            print(f"Serving demo data at {base_url}; writing {OUT.relative_to(ROOT)}/")
            take_screenshots(base_url, password, ids)


if __name__ == "__main__":
    main()

"""A CSV import in a real browser: a file with errors is previewed with them and writes nothing; the fixed file
previews clean, and Apply creates the customers, each audited, and the import itself audited."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Customer, Subscription
from tests.factories import PlanFactory, UserFactory
from tests.services.imports.helpers import CUSTOMER_HEADER, csv_bytes, customer

pytestmark = pytest.mark.browser


def count(model) -> int:
    db.session.rollback()  # read what the live server committed
    return db.session.scalar(select(func.count()).select_from(model))


def upload(page, content: bytes) -> None:
    page.goto("/imports/")
    page.get_by_label("The file holds").select_option("customers")
    page.get_by_label("CSV file").set_input_files(files=[{"name": "from-peer.csv", "mimeType": "text/csv",
                                                          "buffer": content}])
    page.get_by_role("button", name="Upload and check").click()


def test_an_import_with_errors_then_without(page, sign_in, live_app):
    PlanFactory(code="HOME-50", name="Home 50")
    clerk = UserFactory(role="billing", name="Bea Billing")
    sign_in(clerk)
    rows = [customer(1, account_number="P-1"), customer(2, account_number="P-2", plan="Gold 1000"),
            customer(3, account_number="P-3", start_date="2026-13-01")]

    upload(page, csv_bytes(CUSTOMER_HEADER, rows))
    expect(page.locator("#import-status")).to_contain_text("2 error(s) in 2 row(s)")
    errors = page.locator("#import-errors tbody tr")
    expect(errors).to_have_count(2)
    expect(errors.nth(0)).to_contain_text("3")
    expect(errors.nth(0)).to_contain_text("No plan with the code or name “Gold 1000”")
    expect(errors.nth(1)).to_contain_text("start_date")
    expect(page.locator("#apply-form")).to_have_count(0)
    assert count(Customer) == 0 and count(Subscription) == 0
    page.set_viewport_size({"width": 375, "height": 800})  # the preview fits a phone: no sideways scrolling
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.set_viewport_size({"width": 1280, "height": 900})

    rows[1]["plan"], rows[2]["start_date"] = "Home 50", "2026-11-01"
    upload(page, csv_bytes(CUSTOMER_HEADER, rows))
    expect(page.locator("#import-status")).to_contain_text("every row passes")
    expect(page.locator("#count-customers")).to_contain_text("3 to create")
    assert count(Customer) == 0

    page.get_by_role("button", name="Apply the import").click()
    expect(page.get_by_role("alert").first).to_contain_text("Imported: 3 customer(s), 3 subscription(s).")
    expect(page.locator("#import-status")).to_contain_text("Applied")
    assert count(Customer) == 3 and count(Subscription) == 3
    events = db.session.scalars(select(AuditEvent).where(AuditEvent.actor_id == clerk.id)).all()
    assert sorted({e.action for e in events} - {"user.login"}) == ["customer.create", "import.apply",
                                                                 "subscription.create"]
    assert [e.after["rows"] for e in events if e.action == "import.apply"] == [3]

    page.goto("/imports/")
    expect(page.locator("#imports tbody tr")).to_have_count(2)
    expect(page.locator("#imports tbody tr").first).to_contain_text("applied")

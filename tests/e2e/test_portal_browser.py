"""The subscriber portal in a real browser, end to end: a customer cut off for an unpaid invoice lands in the walled
garden, signs in to the portal, pays through the local Stripe's hosted page and is back online — billing, the
ledger, FreeRADIUS's answer and the reconciliation all agree — at a phone's width, without a CSP violation."""
from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from isp_admin.extensions import db
from isp_admin.models import Customer, Nas, Plan, Subscription
from isp_admin.models.portal import PortalAccount
from isp_admin.services.network import coa, credentials, reconcile
from isp_admin.unit_of_work import commit_step
from tests.e2e.conftest import TIMEOUT_MS
from tests.e2e.test_browser import RECORD_CSP_VIOLATIONS
from tests.factories import _PASSWORD_HASH, PASSWORD
from tests.payments.conftest import STRIPE_SECRET, invoice, make_debtor, payments_of
from tests.support.fake_nas import FakeNas

pytestmark = pytest.mark.browser

PHONE = {"width": 375, "height": 812}
LOGIN = "walled.customer"


@pytest.fixture
def router(stripe_live) -> Iterator[FakeNas]:
    """A fake NAS on loopback, registered as the router 127.0.0.1 (where the test's accounting comes from)."""
    fake = FakeNas("nas-secret").start()
    db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", type="mikrotik", secret="nas-secret",
                       coa_port=fake.port))
    db.session.commit()
    yield fake
    fake.stop()


@pytest.fixture
def phone(browser, stripe_live) -> Iterator[Page]:
    """A page at a phone's width in a fresh context whose relative URLs go to the served app (which offers Stripe)."""
    context = browser.new_context(base_url=stripe_live.base, viewport=PHONE, is_mobile=True, has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.add_init_script(RECORD_CSP_VIOLATIONS)
    yield page
    context.close()


def test_a_suspended_customer_pays_the_overdue_invoice_in_the_portal_and_is_back_online(
        stripe_live, freeradius, router, phone):
    fake, base = stripe_live.fake, stripe_live.base
    fake.configure_webhook(base + "/webhooks/stripe/", STRIPE_SECRET)
    debtor = make_debtor(cents=5800)
    sub = db.session.get(Subscription, debtor.subscription_id)
    sub.pppoe_username = LOGIN
    db.session.add(PortalAccount(customer_id=debtor.customer_id, password_hash=_PASSWORD_HASH))
    db.session.commit()
    password = credentials.set_password(sub.id)
    db.session.commit()
    account_number = db.session.get(Customer, debtor.customer_id).account_number

    # The router asks FreeRADIUS: the login is let into the walled garden only, and a session opens there.
    radius = freeradius.client()
    walled = radius.authenticate(LOGIN, password)
    assert walled.accepted and walled.first("Framed-Pool") == "walled-garden"
    radius.account("Start", LOGIN, "WG1", framed_ip="10.99.0.7")

    # The walled garden sends every page to /portal/pay: not signed in yet, so the sign-in page first.
    errors: list[str] = []
    # Our pages only: the fake's hosted page has no favicon (localstripe answers its request with a 401).
    phone.on("console", lambda message: errors.append(f"{message.text} {message.location}")
             if message.type == "error" and not message.location.get("url", "").startswith(fake.base) else None)
    phone.goto("/portal/pay")
    expect(phone).to_have_url(re.compile(r"/portal/login\?next="))
    phone.get_by_label("Account number or email").fill(account_number)
    phone.get_by_label("Password", exact=True).fill(PASSWORD)
    phone.get_by_role("button", name="Sign in").click()

    # Back on the pay page: the overdue invoice, its balance and Stripe offered.
    expect(phone).to_have_url(re.compile(r"/portal/pay$"))
    row = phone.locator(".list-group-item", has_text=debtor.invoice_number)
    expect(row).to_contain_text("overdue")
    expect(row.get_by_label("Pay with")).to_have_value("stripe")
    no_sideways_scroll(phone)
    row.get_by_role("button", name=re.compile(r"Pay \$?58\.00")).click()

    # Stripe's hosted page (the local fake), then back to the attempt's status page, which follows it to the end.
    expect(phone).to_have_url(re.compile(re.escape(fake.base) + r"/checkout/"))
    expect(phone.locator("#card-number")).to_be_visible()
    phone.locator("#pay").click()
    expect(phone).to_have_url(re.compile(re.escape(base) + r"/portal/payments/attempt/[\w\-]+$"))
    expect(phone.get_by_text("Payment received")).to_be_visible(timeout=30_000)

    # The dashboard no longer asks for money; the history shows what was paid.
    phone.goto("/portal/")
    expect(phone.locator("main")).not_to_contain_text("overdue")
    phone.goto("/portal/payments")
    expect(phone.locator("main")).to_contain_text("58.00")
    no_sideways_scroll(phone)
    assert phone.evaluate("window.__cspViolations") == []
    assert errors == []

    # The ledger: one payment of the invoice's total by Stripe, the invoice paid, the service active.
    [payment] = payments_of(debtor.customer_id)
    assert (payment.provider, payment.amount_cents) == ("stripe", debtor.total_cents)
    assert invoice(debtor.invoice_id).status == "paid"
    db.session.expire_all()
    assert db.session.get(Subscription, debtor.subscription_id).status == "active"

    # The network: FreeRADIUS now answers with the plan's rate and no walled garden, and the router is told to drop
    # the walled-garden session (one Disconnect), so the next login gets the full service.
    back = radius.authenticate(LOGIN, password)
    assert back.accepted and back.first("Framed-Pool") is None
    assert back.first("Mikrotik-Rate-Limit") == plan_rate(db.session.get(Plan, sub.plan_id))
    assert coa.dispatch(commit_step)["acked"] == 1
    [sent] = router.wait_for(1)
    assert (sent.kind, sent.first("User-Name"), sent.first("Acct-Session-Id")) == ("disconnect", LOGIN, "WG1")
    radius.account("Stop", LOGIN, "WG1", framed_ip="10.99.0.7", session_time=300)
    radius.account("Start", LOGIN, "FULL1", framed_ip="100.64.1.7")
    report = reconcile.find_mismatches()
    assert report.total == 0, [(row.kind, row.login, row.detail) for row in report.rows]


def plan_rate(plan) -> str:
    """The Mikrotik-Rate-Limit the plan gives (upload/download, as the router reads it)."""
    return f"{plan.upload_mbps}M/{plan.download_mbps}M"


def no_sideways_scroll(page: Page) -> None:
    """At a phone's width the page fits: nothing makes the reader scroll sideways."""
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), page.url

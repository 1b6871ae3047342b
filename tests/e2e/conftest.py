"""Browser fixtures: the app served by a real werkzeug server on a free port, and headless Chromium.

Each test gets an empty database, a fresh server (CSRF on, as in production) and a fresh browser context, so
cookies never leak between tests. Ports are chosen by the OS, so xdist workers never collide.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from isp_admin.devserver import CHROMIUM, CHROMIUM_ARGS, serve_in_background
from tests.conftest import clean_context
from tests.factories import PASSWORD
from tests.payments.conftest import stripe_fake, stripe_live  # noqa: F401  (the portal's pay-online test)

TIMEOUT_MS = 10_000


@pytest.fixture
def live_app(make_app):
    """An app with CSRF enabled on an empty database; its context is pushed for factories and queries."""
    with clean_context(make_app(WTF_CSRF_ENABLED=True, RATELIMIT_ENABLED=False)) as app:
        yield app


@pytest.fixture
def live_server(live_app) -> Iterator[str]:
    """Serve `live_app` from a threaded werkzeug server in the background; yield its base URL."""
    with serve_in_background(live_app) as base_url:
        yield base_url


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, shared by the tests of this worker."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server) -> Iterator[Page]:
    """A page in a fresh browser context (no cookies) whose relative URLs go to the live server."""
    context = browser.new_context(base_url=live_server, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def sign_in(page):
    """Sign in through the login form as `user` (made by UserFactory, so its password is PASSWORD)."""

    def submit(user, password: str = PASSWORD) -> None:
        page.goto("/login")
        page.get_by_label("Email").fill(user.email)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_role("button", name="Sign in").click()

    return submit

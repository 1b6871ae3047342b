"""Payments online and the subscriber portal under real concurrency: Stripe delivering one event many times at
once, a customer double-clicking "Pay", two staff deciding one plan-change request, a password link followed twice
at once. Every request goes through a real gunicorn (two workers of eight threads) on PostgreSQL, on a connection
of its own, released together by a barrier; the server calls the local Stripe fake (tests/support/stripe_fake.py)
as it would call Stripe.

Each race must leave exactly the effects its story allows in the database, answer no one with a 5xx, and leave no
traceback in gunicorn's log.
"""
from __future__ import annotations

import secrets

import pytest
from sqlalchemy import func, select
from werkzeug.security import check_password_hash

from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, PaymentAttempt, PlanChangeRequest, Subscription
from isp_admin.models.portal import PortalAccount
from isp_admin.services.platform.clock import today
from isp_admin.services.portal import accounts as portal_accounts
from isp_admin.services.portal import plan_changes
from tests.concurrency import ledger
from tests.concurrency.conftest import THREADS, WORKERS
from tests.concurrency.invariants import coverage_problems, ledger_problems
from tests.concurrency.racing import Browser, Outcome, Request, Server, logged_errors, race
from tests.conftest import RUN_ID, clean_context
from tests.factories import _PASSWORD_HASH, PASSWORD, CustomerFactory, PlanFactory, UserFactory
from tests.gunicorn_helpers import gunicorn
from tests.payments.conftest import (
    events,
    invoice,
    make_debtor,
    offer,
    payments_of,
    start_attempt,
    stripe_config,
    subscription,
)
from tests.payments.stripe.helpers import WEBHOOK, completed, intent_succeeded, signed
from tests.support.stripe_fake import StripeFake

ROUNDS = 3
RACE_ROUNDS = 5  # the races these guard showed in nearly every round before their fixes: a few rounds catch a return
DELIVERIES = 8  # one event delivered this many times at once, spread over both workers
CLICKS = 2  # a double click
DECISIONS = 4  # clicks deciding one request at once (a double click on each of two buttons)
LINK_USES = 3  # one password link followed at once (the owner and whoever else has the mail)
REQUESTS_PAGE = "/requests/plan-changes"


@pytest.fixture(scope="module")
def fake():
    """The local Stripe (API and hosted Checkout pages) for the whole module."""
    with StripeFake() as stripe_fake:
        yield stripe_fake


@pytest.fixture(scope="module")
def server(backends, tmp_path_factory, fake):
    """gunicorn (gthread, 2 × 8) offering Stripe at the local fake, for the whole module."""
    if not backends["database_url"].startswith("postgresql"):
        pytest.skip("the concurrency suite needs PostgreSQL (row locks, constraints under real concurrency)")
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    # NETWORK_KICK off: lifting a suspension would queue a network sweep on the shared Redis after each payment.
    with gunicorn(backends, log, workers=WORKERS, threads=THREADS, NETWORK_KICK="false",
                  RQ_QUEUE=f"portal-pairs-{RUN_ID}", **stripe_config(fake.base)) as base:
        yield Server(base, log)


@pytest.fixture
def app(make_app, fake):
    """This process's app on the same empty database, Stripe configured here too and switched on for everyone."""
    with clean_context(make_app(**stripe_config(fake.base))) as made:
        offer("stripe")  # a row in the database: the server offers Stripe from it as well
        yield made


def assert_served(outcome: Outcome, allowed: dict[str, set[int]]) -> None:
    """No 5xx, every status one its operation allows, and no exception in what gunicorn logged meanwhile."""
    problems = [f"{a.label}: {a.status} not among {sorted(allowed[a.label])}" for a in outcome.answers
                if a.status not in allowed[a.label]]
    if "Traceback" in outcome.log:
        problems.append("gunicorn logged a traceback:\n" + outcome.log[outcome.log.index("Traceback"):][:2000])
    problems += logged_errors(outcome.log)
    assert not problems, "\n".join(problems) + "\n" + outcome.evidence()


def count(model, *where) -> int:
    """Committed rows of `model` matching `where`."""
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


# --- 1. Stripe delivers one payment's events many times at once ---------------------------------------------------

def delivery(label: str, evt: dict) -> Request:
    """Stripe's POST of `evt`, signed with our webhook secret."""
    body, headers = signed(evt)
    return Request(label, "POST", WEBHOOK, raw=body, headers=headers)


@pytest.mark.parametrize("kinds", [("completed",), ("intent",), ("completed", "intent")],
                         ids=["checkout-completed", "intent-succeeded", "both"])
def test_one_payment_s_events_delivered_many_times_at_once_make_one_payment(app, server, tally, kinds):
    for _ in range(ROUNDS):
        debtor = make_debtor()
        attempt = start_attempt(debtor, session_id=f"cs_test_{secrets.token_hex(12)}")
        intent = f"pi_test_{secrets.token_hex(8)}"
        made = {"completed": completed(attempt, intent=intent), "intent": intent_succeeded(attempt, intent=intent)}

        outcome = race(server, {}, [delivery(k, made[k]) for k in kinds] * (DELIVERIES // len(kinds)))
        tally(outcome)

        assert_served(outcome, {k: {200} for k in kinds})
        [payment] = payments_of(debtor.customer_id)
        assert (payment.amount_cents, payment.provider, payment.provider_ref, payment.status) == \
            (debtor.total_cents, "stripe", attempt.provider_ref, "completed"), outcome.evidence()
        # One stored event per event id: the first delivery acted, every other one found it and changed nothing.
        stored = {e.event_id: e for e in events() if e.attempt_id == attempt.id}
        assert sorted(stored) == sorted(made[k]["id"] for k in kinds), outcome.evidence()
        assert sorted(e.outcome for e in stored.values()) == \
            (["recorded"] if len(kinds) == 1 else ["already_recorded", "recorded"]), outcome.evidence()
        assert all(e.payment_id == payment.id for e in stored.values()), outcome.evidence()
        # Every answer reports its event's one stored outcome, replays included: Stripe stops retrying all of them.
        for answer in outcome.answers:
            assert answer.json == {"received": True, "outcomes": [stored[made[answer.label]["id"]].outcome]}, \
                outcome.evidence()
        after = db.session.get(PaymentAttempt, attempt.id)
        assert (after.status, after.payment_id) == ("succeeded", payment.id), outcome.evidence()
        paid = invoice(debtor.invoice_id)
        assert (paid.status, paid.amount_paid_cents) == ("paid", debtor.total_cents), outcome.evidence()
        assert ledger.allocations_to(debtor.invoice_id, active_only=False) == [debtor.total_cents]
        sub = subscription(debtor.subscription_id)
        assert (sub.status, sub.suspension_reason) == ("active", None), outcome.evidence()
        assert len(ledger.audit_ids("subscription.reactivate", "subscriptions", sub.id)) == 1, outcome.evidence()
        problems = ledger_problems()
        assert not problems, "\n".join(problems) + "\n" + outcome.evidence()


# --- 2. A customer double-clicks "Pay" in the portal --------------------------------------------------------------

def portal_browser(server: Server, customer_id: int) -> Browser:
    """A browser signed in to the portal as the customer (who gets a portal password first)."""
    db.session.add(PortalAccount(customer_id=customer_id, password_hash=_PASSWORD_HASH, session_version=1))
    db.session.commit()
    number = db.session.get(Customer, customer_id).account_number
    browser = Browser(server.base)
    status, headers, _ = browser.submit("/portal/login", "/portal/login", {"identifier": number,
                                                                            "password": PASSWORD})
    assert status == 302 and headers["Location"] == "/portal/", (status, headers)
    return browser


def checkout_session(fake: StripeFake, location: str) -> dict:
    """The fake's Checkout Session whose hosted page `location` is."""
    assert location.startswith(f"{fake.base}/checkout/cs_test_"), location
    return fake.sessions[location.rsplit("/", 1)[1]]


def double_click_pay(server: Server, fake: StripeFake, tally):
    """One overdue invoice, its customer signed in, "Pay" posted CLICKS times at once: the debtor, the answers'
    hosted pages, the invoice's attempts, and the race."""
    debtor = make_debtor()
    browser = portal_browser(server, debtor.customer_id)
    token = browser.csrf("/portal/pay")
    click = browser.form("pay", f"/portal/pay/{debtor.invoice_id}", {"provider": "stripe", "csrf_token": token})

    outcome = race(server, {}, [click] * CLICKS)
    tally(outcome)

    assert_served(outcome, {"pay": {302}})
    pages = [a.headers["Location"] for a in outcome.answers]
    attempts = list(db.session.scalars(select(PaymentAttempt).where(PaymentAttempt.invoice_id == debtor.invoice_id)
                                       .order_by(PaymentAttempt.id)))
    return debtor, pages, attempts, outcome


def test_a_double_clicked_pay_sends_every_click_to_a_checkout_page_for_the_invoice(app, server, fake, tally):
    for _ in range(ROUNDS):
        debtor, pages, attempts, outcome = double_click_pay(server, fake, tally)

        # Every click lands on a hosted page asking exactly the invoice's balance, each page an attempt of ours.
        sessions = [checkout_session(fake, page) for page in pages]
        assert all(s["amount_total"] == debtor.total_cents and s["status"] == "open" for s in sessions), sessions
        assert all(s["metadata"]["invoice"] == debtor.invoice_number for s in sessions), sessions
        assert {s["id"] for s in sessions} <= {a.provider_ref for a in attempts}, outcome.evidence()
        # Every attempt got its page (none left half-started, none failed) and nothing was charged yet.
        assert [(a.status, a.amount_cents, a.redirect_url is not None) for a in attempts] == \
            [("pending", debtor.total_cents, True)] * len(attempts), outcome.evidence()
        assert payments_of(debtor.customer_id) == []


def test_a_double_clicked_pay_opens_one_checkout_for_the_invoice(app, server, fake, tally):
    for _ in range(RACE_ROUNDS):
        debtor, pages, attempts, outcome = double_click_pay(server, fake, tally)

        assert len(set(pages)) == 1, f"{len(set(pages))} checkout pages for one invoice\n{outcome.evidence()}"
        assert len(attempts) == 1, f"{len(attempts)} pending attempts for one invoice\n{outcome.evidence()}"


# --- 3. Two staff decide one plan-change request at once ----------------------------------------------------------

def staff_browser(server: Server) -> Browser:
    """A browser signed in to the staff pages as an admin."""
    user = UserFactory(role="admin")
    browser = Browser(server.base)
    status, headers, _ = browser.submit("/login", "/login", {"email": user.email, "password": PASSWORD})
    assert status == 302, (status, headers)
    return browser


def pending_request(old, new) -> tuple[int, int]:
    """A subscription billed ten days ago on `old` and its customer's pending request to move to `new`: the ids."""
    sub = ledger.billed_subscription(CustomerFactory(), old, days_ago=10)
    request = plan_changes.request_change(sub.customer_id, sub.id, new.id, "Faster, please")
    db.session.commit()
    return sub.id, request.id


DONE = {"approve": "Request approved: the plan is changed.", "reject": "Request rejected."}


@pytest.mark.parametrize("decisions", [("approve",), ("approve", "reject")], ids=["approve-approve", "approve-reject"])
def test_one_plan_change_request_decided_at_once_is_decided_once(app, server, tally, decisions):
    old, new = PlanFactory(monthly_price_cents=4900, tax_rate_bp=1600), PlanFactory(monthly_price_cents=7900,
                                                                                     tax_rate_bp=1600)
    staff = staff_browser(server)
    for _ in range(ROUNDS):
        sub_id, request_id = pending_request(old, new)
        invoices_before = count(Invoice, Invoice.customer_id == db.session.get(Subscription, sub_id).customer_id)
        token = staff.csrf(REQUESTS_PAGE)
        clicks = [staff.form(d, f"{REQUESTS_PAGE}/{request_id}/{d}", {"csrf_token": token, "note": ""})
                  for d in decisions] * (DECISIONS // len(decisions))

        outcome = race(server, {}, clicks)
        tally(outcome)

        assert_served(outcome, {d: {302} for d in decisions})
        assert all(a.headers["Location"] == REQUESTS_PAGE for a in outcome.answers), outcome.evidence()
        decided = ledger.fresh(PlanChangeRequest, request_id)
        winner = {"approved": "approve", "rejected": "reject"}[decided.status]
        # Each person is told what happened to their click: one "done", every other "already decided".
        told = sorted(tuple(staff.after(a).flashes(REQUESTS_PAGE)) for a in outcome.answers)
        assert told == sorted([(DONE[winner],)] + [(f"This request was already {decided.status}.",)] *
                              (len(clicks) - 1)), f"{told}\n{outcome.evidence()}"
        decisions_made = [*ledger.audit_ids("plan_change_request.approved", "plan_change_requests", request_id),
                          *ledger.audit_ids("plan_change_request.rejected", "plan_change_requests", request_id)]
        assert len(decisions_made) == 1, outcome.evidence()
        changes = ledger.audit_ids("subscription.change_plan", "subscriptions", sub_id)
        notes = ledger.credit_notes("plan_change", subscription_id=sub_id)
        invoices_made = count(Invoice, Invoice.customer_id == decided.customer_id) - invoices_before
        plan = ledger.fresh(Subscription, sub_id).plan_id
        if winner == "approve":
            # One change: the old plan's unused days credited once, the rest of the period charged once.
            assert (len(changes), len(notes), invoices_made, plan) == (1, 1, 1, new.id), outcome.evidence()
        else:
            assert (changes, notes, invoices_made, plan) == ([], [], 0, old.id), outcome.evidence()
        problems = ledger_problems() + coverage_problems(today())
        assert not problems, "\n".join(problems) + "\n" + outcome.evidence()


# --- 4. One password link followed twice at once ------------------------------------------------------------------

def test_a_password_link_followed_twice_at_once_sets_the_password_once(app, server, tally):
    for _ in range(RACE_ROUNDS):
        customer = CustomerFactory(email=f"link-{secrets.token_hex(4)}@example.net")
        account = PortalAccount(customer_id=customer.id, password_hash=_PASSWORD_HASH, session_version=1)
        db.session.add(account)
        db.session.commit()
        path = f"/portal/set-password/{portal_accounts.make_link_token(account)}"
        browsers = [Browser(server.base) for _ in range(LINK_USES)]
        passwords = [f"violet otter juggles {n} moons {secrets.token_hex(3)}" for n in range(LINK_USES)]
        uses = [b.form(f"use-{n}", path, {"password": p, "confirm": p, "csrf_token": b.csrf(path)})
                for n, (b, p) in enumerate(zip(browsers, passwords, strict=True))]

        outcome = race(server, {}, uses)
        tally(outcome)

        # The winner goes to the dashboard; a loser back to ask for a link (302) or to the form, refused (422).
        assert_served(outcome, {use.label: {302, 422} for use in uses})
        won = [n for n, a in enumerate(outcome.answers) if a.status == 302 and a.headers["Location"] == "/portal/"]
        assert len(won) == 1, f"{len(won)} requests set the password with one link\n{outcome.evidence()}"
        after = ledger.fresh(PortalAccount, account.id)
        assert check_password_hash(after.password_hash, passwords[won[0]]), outcome.evidence()
        assert after.session_version == 2, outcome.evidence()
        assert len(ledger.audit_ids("portal_account.password_set", "portal_accounts", account.id)) == 1
        # Only the winner is signed in.
        signed_in = [n for n, (b, a) in enumerate(zip(browsers, outcome.answers, strict=True))
                     if b.after(a).open("GET", "/portal/")[0] == 200]
        assert signed_in == won, outcome.evidence()

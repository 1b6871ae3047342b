"""The exactly-once core (services/payments/events.py), provider-neutral: a notice acts once however often and
however concurrently it comes; what cannot become a payment is kept for a person, never dropped."""
from __future__ import annotations

import pytest

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, PaymentAttempt, ProviderEvent
from isp_admin.services.payments.events import apply_notice
from isp_admin.services.payments.providers.base import Notice
from isp_admin.services.platform.bounds import MAX_AMOUNT_CENTS
from isp_admin.services.platform.clock import today
from isp_admin.unit_of_work import commit_once
from tests.payments.conftest import count, events, make_debtor, payments_of, start_attempt
from tests.support.threads import in_threads


def paid(attempt: PaymentAttempt, event_id: str = "evt_1", **kw) -> Notice:
    return Notice(event_id=event_id, event_type="test.paid", kind="succeeded", attempt_ref=attempt.provider_ref,
                  amount_cents=kw.pop("amount_cents", attempt.amount_cents), currency="usd", receipt="pi_1", **kw)


def apply(notice: Notice) -> ProviderEvent:
    return commit_once(apply_notice, "stripe", notice, today())


def test_the_same_notice_applied_again_returns_the_first_event_and_pays_once(stripe_app):
    debtor = make_debtor()
    notice = paid(start_attempt(debtor))

    first, again = apply(notice), apply(notice)

    assert first.id == again.id and first.outcome == "recorded"
    assert len(payments_of(debtor.customer_id)) == 1


def test_concurrent_copies_of_one_notice_pay_once(stripe_app):
    debtor = make_debtor()
    notice = paid(start_attempt(debtor))

    results = in_threads(stripe_app, *[lambda: apply_notice("stripe", notice, today()).id] * 6)

    assert not [r for r in results if isinstance(r, Exception)], results
    assert len(set(results)) == 1
    assert len(payments_of(debtor.customer_id)) == 1 and count(ProviderEvent) == 1


def test_concurrent_copies_of_an_unmatched_notice_are_stored_once(stripe_app):
    stray = Notice(event_id="evt_stray", event_type="test.paid", kind="succeeded", public_id="nobody",
                   amount_cents=500, currency="usd")

    results = in_threads(stripe_app, *[lambda: apply_notice("stripe", stray, today()).outcome] * 6)

    assert results == ["unmatched"] * 6
    assert count(ProviderEvent) == 1


def test_different_notices_about_one_attempt_pay_once(stripe_app):
    debtor = make_debtor()
    attempt = start_attempt(debtor)
    notices = [paid(attempt, event_id=f"evt_{n}") for n in range(5)]

    results = in_threads(stripe_app, *[lambda n=n: apply_notice("stripe", n, today()).outcome for n in notices])

    assert sorted(results) == ["already_recorded"] * 4 + ["recorded"]
    assert len(payments_of(debtor.customer_id)) == 1


def test_a_failure_ends_a_pending_attempt_once_and_never_a_paid_one(stripe_app):
    debtor = make_debtor()
    attempt = start_attempt(debtor)
    failed = Notice(event_id="evt_f", event_type="test.failed", kind="failed", attempt_ref=attempt.provider_ref,
                    detail="Declined")

    assert apply(failed).outcome == "failed"
    assert db.session.get(PaymentAttempt, attempt.id).failure_reason == "Declined"
    assert count(AuditEvent, AuditEvent.action == "payment_attempt.fail") == 1
    assert apply(paid(attempt)).outcome == "recorded"  # money after a failure is still money
    late_failure = Notice(event_id="evt_f2", event_type="test.failed", kind="failed", attempt_ref=attempt.provider_ref)
    assert apply(late_failure).outcome == "ignored"
    assert db.session.get(PaymentAttempt, attempt.id).status == "succeeded"


@pytest.mark.parametrize("amount", [MAX_AMOUNT_CENTS + 1, 0])
def test_an_amount_the_ledger_refuses_is_held_not_bounced_back_to_the_provider(stripe_app, amount):
    debtor = make_debtor()
    attempt = start_attempt(debtor)

    stored = apply(paid(attempt, amount_cents=amount))

    assert stored.outcome == "held"
    assert payments_of(debtor.customer_id) == []
    assert db.session.get(PaymentAttempt, attempt.id).status == "pending"
    assert events()[0].detail


def test_a_refund_without_a_payment_is_ignored(stripe_app):
    debtor = make_debtor()
    attempt = start_attempt(debtor)
    refund = Notice(event_id="evt_r", event_type="test.refunded", kind="refunded", attempt_ref=attempt.provider_ref,
                    amount_cents=5800)

    assert apply(refund).outcome == "ignored"
    assert events()[0].detail == "nothing recorded to refund"

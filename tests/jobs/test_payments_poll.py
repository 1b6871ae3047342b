"""The status sweep over pending online payments: a push whose callback never came is asked about and recorded
(or failed) exactly once, even racing the callback; abandoned attempts expire; a provider that cannot be reached
is counted and the sweep goes on; the job runs in a real RQ worker, and `flask payments poll` runs the same body."""
from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from isp_admin.devserver import free_port, serve_in_background
from isp_admin.extensions import db
from isp_admin.jobs.queue import get_queue
from isp_admin.jobs.schedule import periodic_jobs
from isp_admin.models import AuditEvent, Invoice, Payment, PaymentAttempt, ProviderEvent
from isp_admin.services.payments.poll import poll_pending
from isp_admin.services.payments.providers.mpesa import forget_tokens
from isp_admin.services.platform.clock import utcnow
from isp_admin.unit_of_work import commit_step
from tests.conftest import clean_context
from tests.jobs.conftest import BASE_ENV, _drop_redis_keys, run_worker
from tests.support.daraja import (
    QUERY,
    SHORTCODE,
    Daraja,
    callback_url,
    enable_mpesa,
    mpesa_settings,
    post_json,
    running_daraja,
    start_payment,
    stk_callback,
    suspended_for_non_payment,
)
from tests.support.threads import in_threads


@pytest.fixture
def daraja() -> Iterator[Daraja]:
    """The worker's Daraja double with default answers (STK query ResultCode 0) and an empty request log."""
    double = running_daraja()
    double.mock.reset()
    forget_tokens()
    yield double
    double.mock.reset()


@pytest.fixture
def poll_app(make_app, backends, daraja, queue_name) -> Iterator:
    """A KES app on this test's queue, pointed at the double, M-Pesa enabled; the app context is pushed."""
    with clean_context(make_app(RQ_QUEUE=queue_name, **mpesa_settings(daraja.url))) as app:
        enable_mpesa()
        yield app
    if backends["redis_url"]:
        _drop_redis_keys(backends["redis_url"], queue_name)


def pushed(total_cents: int = 150000, *, minutes_ago: int = 10, callback_base: str = "http://127.0.0.1:9"):
    """An STK push for a suspended customer's invoice, sent `minutes_ago` and never answered; plain values."""
    owed = suspended_for_non_payment(total_cents=total_cents)
    attempt, token = start_payment(owed["customer_id"], owed["invoice_id"], callback_base=callback_base)
    assert attempt.status == "pending"
    age(attempt.id, minutes=minutes_ago)
    return {**owed, "attempt_id": attempt.id, "ref": attempt.provider_ref,
            "url": callback_url(callback_base, attempt, token)}


def age(attempt_id: int, *, minutes: int = 0, checked_minutes_ago: int | None = None) -> None:
    values = {"created_at": utcnow() - timedelta(minutes=minutes)}
    if checked_minutes_ago is not None:
        values["checked_at"] = utcnow() - timedelta(minutes=checked_minutes_ago)
    db.session.execute(update(PaymentAttempt).where(PaymentAttempt.id == attempt_id).values(**values))
    db.session.commit()


def attempt_of(row: dict) -> PaymentAttempt:
    db.session.rollback()
    return db.session.get(PaymentAttempt, row["attempt_id"])


def payments() -> list[Payment]:
    db.session.rollback()
    return list(db.session.scalars(select(Payment).order_by(Payment.id)))


def poll(**kwargs) -> dict:
    return poll_pending(kwargs.pop("now", None) or utcnow(), commit_step, **kwargs)


def test_a_push_whose_callback_never_came_is_recorded_from_the_status_query(poll_app, daraja):
    row = pushed()

    counts = poll()

    assert counts == {"checked": 1, "paid": 1, "failed": 0, "pending": 0, "errors": 0, "expired": 0}
    [query] = daraja.sent(QUERY)
    assert (query["CheckoutRequestID"], query["BusinessShortCode"]) == (row["ref"], SHORTCODE)
    assert len(query["Timestamp"]) == 14 and query["Password"]
    [payment] = payments()
    assert (payment.amount_cents, payment.provider, payment.provider_ref) == (150000, "mpesa", row["ref"])
    attempt = attempt_of(row)
    assert (attempt.status, attempt.payment_id, attempt.checks) == ("succeeded", payment.id, 1)
    assert db.session.get(Invoice, row["invoice_id"]).status == "paid"
    assert db.session.scalar(select(ProviderEvent.event_id)) == f"stk:{row['ref']}"
    # Nothing pending is left to ask about: the next sweep asks nobody.
    assert poll()["checked"] == 0 and len(daraja.sent(QUERY)) == 1


def test_a_cancelled_push_fails_then_a_late_callback_still_records_the_money(poll_app, daraja):
    with serve_in_background(poll_app) as served:
        row = pushed(callback_base=served)
        daraja.mock.set_stk_result(1032)

        assert poll() == {"checked": 1, "paid": 0, "failed": 1, "pending": 0, "errors": 0, "expired": 0}
        attempt = attempt_of(row)
        assert (attempt.status, attempt.failure_reason) == ("failed", "Request cancelled by user.")
        assert payments() == []

        late = post_json(row["url"], stk_callback(row["ref"], 0, amount=1500, receipt="RKL0000001"))

    assert late.status_code == 200 and late.json()["outcomes"] == ["recorded"]
    [payment] = payments()
    assert (payment.amount_cents, payment.reference) == (150000, "RKL0000001")
    assert attempt_of(row).status == "succeeded"
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)
                             .where(AuditEvent.action == "payment_attempt.late_success")) == 1


def test_only_attempts_due_a_check_are_asked_and_an_unanswered_one_waits(poll_app, daraja):
    fresh = pushed(minutes_ago=1)  # the callback may still come
    asked_lately = pushed(minutes_ago=30)
    age(asked_lately["attempt_id"], minutes=30, checked_minutes_ago=2)
    due = pushed(minutes_ago=30)
    daraja.mock.set_stk_result(4999)  # Daraja: "still under processing"

    counts = poll()

    assert counts == {"checked": 1, "paid": 0, "failed": 0, "pending": 1, "errors": 0, "expired": 0}
    assert [q["CheckoutRequestID"] for q in daraja.sent(QUERY)] == [due["ref"]]
    assert [(attempt_of(r).status, attempt_of(r).checks) for r in (fresh, asked_lately, due)] == [
        ("pending", 0), ("pending", 0), ("pending", 1)]
    assert poll()["checked"] == 0  # just asked: it waits PAYMENTS_POLL_AFTER_MINUTES again
    assert payments() == []


def test_abandoned_attempts_expire_with_an_audit_event(poll_app, daraja):
    hours = poll_app.config["PAYMENTS_EXPIRE_HOURS"]
    old = pushed(minutes_ago=hours * 60 + 1)
    unstarted = pushed(minutes_ago=61)
    db.session.execute(update(PaymentAttempt).where(PaymentAttempt.id == unstarted["attempt_id"])
                       .values(provider_ref=None))  # the start never returned
    db.session.commit()
    young = pushed(minutes_ago=hours * 60 - 30)
    daraja.mock.set_stk_result(4999)

    counts = poll()

    assert (counts["expired"], counts["checked"], counts["pending"]) == (2, 1, 1)
    assert [attempt_of(r).status for r in (old, unstarted, young)] == ["expired", "expired", "pending"]
    assert [q["CheckoutRequestID"] for q in daraja.sent(QUERY)] == [young["ref"]]
    assert f"within {hours} hours" in attempt_of(old).failure_reason
    expired = db.session.scalars(select(AuditEvent.entity_id).where(AuditEvent.action == "payment_attempt.expire"))
    assert sorted(expired) == sorted([old["attempt_id"], unstarted["attempt_id"]])
    assert poll()["expired"] == 0


def test_daraja_unreachable_is_counted_and_the_sweep_goes_on(poll_app, daraja):
    first, second = pushed(), pushed()
    abandoned = pushed(minutes_ago=poll_app.config["PAYMENTS_EXPIRE_HOURS"] * 60 + 5)
    poll_app.config["MPESA_BASE_URL"] = f"http://127.0.0.1:{free_port()}"  # Safaricom is down

    counts = poll()

    assert counts == {"checked": 2, "paid": 0, "failed": 0, "pending": 0, "errors": 2, "expired": 1}
    assert [(attempt_of(r).status, attempt_of(r).checks) for r in (first, second)] == [("pending", 1)] * 2
    assert attempt_of(abandoned).status == "expired"
    assert payments() == []

    poll_app.config["MPESA_BASE_URL"] = daraja.url  # back: the next sweep after the wait records both
    counts = poll(now=utcnow() + timedelta(minutes=poll_app.config["PAYMENTS_POLL_AFTER_MINUTES"] + 1))

    assert (counts["paid"], counts["errors"]) == (2, 0)
    assert len(payments()) == 2
    assert [attempt_of(r).status for r in (first, second)] == ["succeeded"] * 2


@pytest.mark.parametrize("round_", range(3))
def test_the_callback_racing_the_sweep_records_one_payment(poll_app, daraja, round_):
    with serve_in_background(poll_app) as served:
        row = pushed(callback_base=served)
        callback = stk_callback(row["ref"], 0, amount=1500, receipt=f"RKR{round_:07d}")

        results = in_threads(poll_app, lambda: post_json(row["url"], callback).status_code, poll)

    assert results[0] == 200 and isinstance(results[1], dict), results
    [payment] = payments()
    assert payment.amount_cents == 150000
    assert attempt_of(row).payment_id == payment.id
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(ProviderEvent)) == 1  # one fact, one event id


def test_the_periodic_job_is_in_the_table_at_payments_poll_cron(poll_app):
    [entry] = [p for p in periodic_jobs() if p.name == "payments"]

    assert (entry.cron, entry.func) == (poll_app.config["PAYMENTS_POLL_CRON"], "isp_admin.jobs.tasks.poll_payments")


def test_the_job_runs_in_a_real_rq_worker(poll_app, backends, queue_name, daraja):
    if not backends["redis_url"]:
        pytest.skip("needs Redis")
    row = pushed()
    env = {**os.environ, **BASE_ENV, "DATABASE_URL": backends["database_url"], "REDIS_URL": backends["redis_url"],
           "RQ_QUEUE": queue_name, "CURRENCY": "KES",
           **{key: str(value) for key, value in mpesa_settings(daraja.url).items() if key != "CURRENCY"}}
    get_queue().enqueue("isp_admin.jobs.tasks.poll_payments")

    run_worker(env)

    [payment] = payments()
    assert (payment.provider_ref, attempt_of(row).status) == (row["ref"], "succeeded")
    assert [q["CheckoutRequestID"] for q in daraja.sent(QUERY)] == [row["ref"]]


def test_the_command_runs_the_same_sweep_and_prints_the_counts(poll_app, daraja):
    pushed()
    daraja.mock.set_stk_result(1032)

    result = poll_app.test_cli_runner().invoke(args=["payments", "poll"])

    assert result.exit_code == 0, result.output
    assert "checked=1, paid=0, failed=1, pending=0, errors=0, expired=0" in result.output
    assert payments() == []


def test_the_command_exits_1_when_a_provider_could_not_be_asked(poll_app, daraja):
    pushed()
    poll_app.config["MPESA_BASE_URL"] = f"http://127.0.0.1:{free_port()}"

    result = poll_app.test_cli_runner().invoke(args=["payments", "poll", "--limit", "5"])

    assert result.exit_code == 1
    assert "errors=1" in result.output and "1 status queries failed" in result.output

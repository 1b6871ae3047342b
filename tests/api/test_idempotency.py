"""Idempotency-Key on the API's money and run POSTs, with Stripe's semantics, proven against PostgreSQL.

The rules one request at a time go through the test client. Concurrency goes through real servers: gunicorn
(two worker processes of eight threads) for a burst of simultaneous retries, and the in-process threaded werkzeug
server where the test holds a row lock so that a request stays in flight for exactly as long as it needs.
"""
from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial

import pytest
import redis
from sqlalchemy import Interval, func, literal, select, update

from isp_admin.api.idempotency import request_fingerprint
from isp_admin.devserver import serve_in_background
from isp_admin.extensions import db
from isp_admin.models import IdempotencyKey, Invoice, JobRun
from isp_admin.models.base import utcnow
from isp_admin.services.identity import idempotency
from isp_admin.services.identity.idempotency import CLAIM_GRACE
from isp_admin.services.platform.clock import today
from tests.conftest import RUN_ID, clean_context
from tests.factories import CustomerFactory, SubscriptionFactory, UserFactory
from tests.gunicorn_helpers import PAYMENTS, billing_token, call, gunicorn, send_together, wait_until
from tests.support.idempotency import KEY, key_rows, payment_body, payments_of
from tests.support.locks import customer_lock, holding_row_lock, lock_waiters


def age_key(key: str, **by: timedelta) -> None:
    """Move a key's created_at and/or claimed_at into the past, as if time had passed."""
    values = {column: getattr(IdempotencyKey, column) - literal(delta, Interval()) for column, delta in by.items()}
    db.session.execute(update(IdempotencyKey).where(IdempotencyKey.key == key).values(values))
    db.session.commit()


# --- one request at a time ----------------------------------------------------------------------------------------

def test_a_retry_gets_the_first_response_byte_for_byte(client):
    customer = CustomerFactory()
    headers, _ = billing_token()
    body = payment_body(customer.id, reference="BANK-1")

    first = client.post(PAYMENTS, json=body, headers={**headers, KEY: "pay-1"})
    # The same JSON with its keys in another order and other spacing is the same request.
    again = client.post(PAYMENTS, data=json.dumps(dict(reversed(body.items())), indent=2),
                        content_type="application/json", headers={**headers, KEY: "pay-1"})

    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_data() == first.get_data()  # the timestamp included: nothing was run or rendered again
    assert again.headers["Location"] == first.headers["Location"]
    assert first.headers["Location"] == f"/api/billing/payments/{first.json['data']['id']}/"
    assert again.mimetype == "application/json"
    assert [p.id for p in payments_of(customer.id)] == [first.json["data"]["id"]]
    assert [(k.key, k.state, k.response_status) for k in key_rows()] == [("pay-1", "done", 201)]


def test_the_same_key_for_another_request_is_refused(client):
    customer = CustomerFactory()
    headers, _ = billing_token()
    assert client.post(PAYMENTS, json=payment_body(customer.id), headers={**headers, KEY: "pay-2"}).status_code == 201

    other_amount = client.post(PAYMENTS, json=payment_body(customer.id, 2600), headers={**headers, KEY: "pay-2"})
    other_path = client.post("/api/billing/invoices/", json={"customer_id": customer.id, "lines": [
        {"description": "Router", "unit_price_cents": 2500}]}, headers={**headers, KEY: "pay-2"})

    for refused in (other_amount, other_path):
        assert refused.status_code == 422
        assert refused.json["error"]["code"] == "VALIDATION_ERROR" and KEY in refused.json["error"]["details"]
        assert "Idempotent-Replayed" not in refused.headers
    assert [p.amount_cents for p in payments_of(customer.id)] == [2500]
    assert db.session.scalar(select(func.count()).select_from(Invoice)) == 0


def test_a_key_belongs_to_one_token(client):
    customer = CustomerFactory()
    clerk = UserFactory(role="billing")
    (mine, _), (theirs, _) = billing_token(clerk), billing_token(clerk)
    body = payment_body(customer.id)

    first = client.post(PAYMENTS, json=body, headers={**mine, KEY: "shared-key"})
    second = client.post(PAYMENTS, json=body, headers={**theirs, KEY: "shared-key"})

    assert first.status_code == second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers and second.json["data"]["id"] != first.json["data"]["id"]
    assert len(payments_of(customer.id)) == 2
    for headers, original in ((mine, first), (theirs, second)):
        replay = client.post(PAYMENTS, json=body, headers={**headers, KEY: "shared-key"})
        assert replay.headers["Idempotent-Replayed"] == "true" and replay.get_data() == original.get_data()


def test_a_refused_request_frees_its_key_for_the_corrected_one(client):
    customer = CustomerFactory()
    headers, _ = billing_token()

    unknown = client.post(PAYMENTS, json=payment_body(customer.id + 1000), headers={**headers, KEY: "fix-me"})
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "NOT_FOUND"
    assert key_rows() == []
    invalid = client.post(PAYMENTS, json=payment_body(customer.id, 0), headers={**headers, KEY: "fix-me"})
    assert invalid.status_code == 422 and "amount_cents" in invalid.json["error"]["details"]
    assert key_rows() == []

    corrected = client.post(PAYMENTS, json=payment_body(customer.id), headers={**headers, KEY: "fix-me"})

    assert corrected.status_code == 201 and "Idempotent-Replayed" not in corrected.headers
    assert len(payments_of(customer.id)) == 1


@pytest.mark.parametrize("key", ["", "   ", "k" * 256, "caf\u00e9", "tab\there"])
def test_a_malformed_key_is_refused(client, key):
    customer = CustomerFactory()
    headers, _ = billing_token()

    response = client.post(PAYMENTS, json=payment_body(customer.id), headers={**headers, KEY: key})

    assert response.status_code == 400 and response.json["error"]["code"] == "VALIDATION_ERROR"
    assert KEY in response.json["error"]["details"]
    assert payments_of(customer.id) == [] and key_rows() == []


def test_an_expired_key_names_a_new_request_and_cleanup_deletes_expired_keys(client, runner):
    customer = CustomerFactory()
    headers, _ = billing_token()
    first = client.post(PAYMENTS, json=payment_body(customer.id, 2500), headers={**headers, KEY: "monthly"})
    age_key("monthly", created_at=timedelta(hours=23, minutes=59), claimed_at=timedelta(hours=23, minutes=59))
    kept = client.post(PAYMENTS, json=payment_body(customer.id, 2500), headers={**headers, KEY: "monthly"})
    assert kept.headers["Idempotent-Replayed"] == "true" and kept.get_data() == first.get_data()  # a day's grace
    assert client.post(PAYMENTS, json=payment_body(customer.id, 3000), headers={**headers, KEY: "monthly"}
                       ).status_code == 422
    age_key("monthly", created_at=timedelta(minutes=2), claimed_at=timedelta(minutes=2))  # now 24 h 1 min old

    reused = client.post(PAYMENTS, json=payment_body(customer.id, 3000), headers={**headers, KEY: "monthly"})

    assert first.status_code == reused.status_code == 201 and "Idempotent-Replayed" not in reused.headers
    assert [p.amount_cents for p in payments_of(customer.id)] == [2500, 3000]
    replay = client.post(PAYMENTS, json=payment_body(customer.id, 3000), headers={**headers, KEY: "monthly"})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.get_data() == reused.get_data()

    # A day later "monthly" has expired again; "fresh" is an hour old and must stay.
    age_key("monthly", created_at=timedelta(hours=25))
    client.post(PAYMENTS, json=payment_body(customer.id, 100), headers={**headers, KEY: "fresh"})
    age_key("fresh", created_at=timedelta(hours=1))
    preview = runner.invoke(args=["data", "cleanup-old-data", "--dry-run"])
    assert preview.exit_code == 0, preview.output
    assert "Would delete 1 API idempotency keys older than 24 hours." in preview.output
    assert len(key_rows()) == 2

    result = runner.invoke(args=["data", "cleanup-old-data"])

    assert result.exit_code == 0, result.output
    assert "Deleted 1 API idempotency keys older than 24 hours." in result.output
    assert [k.key for k in key_rows()] == ["fresh"]
    assert len(payments_of(customer.id)) == 3  # the money stays


def orphan_claim(app, token_id: int, key: str, body: dict, age: timedelta) -> None:
    """What a request leaves behind when it dies mid-way: a committed claim and no work (the work and the stored
    response commit together), claimed `age` ago."""
    with app.test_request_context(PAYMENTS, method="POST", json=body):
        fingerprint = request_fingerprint()
    at = utcnow() - age
    db.session.add(IdempotencyKey(token_id=token_id, key=key, request_hash=fingerprint, method="POST",
                                  path=PAYMENTS, state="in_flight", claim="a" * 32, created_at=at, claimed_at=at))
    db.session.commit()


def test_a_claim_whose_request_is_gone_is_taken_over_at_once_by_the_same_request(app, client):
    customer = CustomerFactory()
    headers, token_id = billing_token()
    body = payment_body(customer.id)
    orphan_claim(app, token_id, "crashed", body, age=CLAIM_GRACE + timedelta(milliseconds=200))

    other = client.post(PAYMENTS, json=payment_body(customer.id, 999), headers={**headers, KEY: "crashed"})
    assert other.status_code == 422  # an abandoned claim is taken over only by the same request
    assert payments_of(customer.id) == []

    retry = client.post(PAYMENTS, json=body, headers={**headers, KEY: "crashed"})

    assert retry.status_code == 201 and "Idempotent-Replayed" not in retry.headers
    assert len(payments_of(customer.id)) == 1
    [row] = key_rows()
    assert row.state == "done" and row.claim != "a" * 32


def test_a_claim_just_made_is_not_read_as_abandoned_before_its_request_locks_it(app, client):
    customer = CustomerFactory()
    headers, token_id = billing_token()
    body = payment_body(customer.id)
    orphan_claim(app, token_id, "new", body, age=timedelta(0))

    busy = client.post(PAYMENTS, json=body, headers={**headers, KEY: "new"})

    assert busy.status_code == 409 and busy.json["error"]["code"] == "CONFLICT"
    assert busy.headers["Retry-After"] == "1"
    assert payments_of(customer.id) == [] and [k.claim for k in key_rows()] == ["a" * 32]


def test_a_claim_whose_transaction_still_holds_its_row_answers_409_however_old(app, client):
    customer = CustomerFactory()
    headers, token_id = billing_token()
    body = payment_body(customer.id)
    orphan_claim(app, token_id, "alive", body, age=timedelta(minutes=10))
    key_statement = select(IdempotencyKey.id).where(IdempotencyKey.key == "alive").with_for_update()

    with holding_row_lock(key_statement) as (owner, _):  # as the owner's work transaction holds it
        busy = client.post(PAYMENTS, json=body, headers={**headers, KEY: "alive"})
        assert busy.status_code == 409 and busy.json["error"]["code"] == "CONFLICT"
        owner.rollback()  # the owner's transaction ends (failed, cut or killed) without storing a response

    retry = client.post(PAYMENTS, json=body, headers={**headers, KEY: "alive"})

    assert retry.status_code == 201 and "Idempotent-Replayed" not in retry.headers
    assert len(payments_of(customer.id)) == 1


def test_the_other_money_and_run_posts_honour_the_key(client):
    customer = CustomerFactory()
    first_of_month = today().replace(day=1)
    SubscriptionFactory(customer=customer, start_date=first_of_month, billing_day=1, next_bill_date=first_of_month)
    headers, _ = billing_token()
    draft = {"customer_id": customer.id, "lines": [{"description": "Router", "unit_price_cents": 4000}],
             "issue": True}

    def twice(path: str, body: dict, key: str):
        answers = [client.post(path, json=body, headers={**headers, KEY: key}) for _ in range(2)]
        assert answers[0].status_code == 201 and "Idempotent-Replayed" not in answers[0].headers
        assert answers[1].headers["Idempotent-Replayed"] == "true" and answers[1].get_data() == answers[0].get_data()
        return answers[0].json["data"]

    generated = twice("/api/billing/generate-invoice/", {"customer_id": customer.id}, "gen-1")
    created = twice("/api/billing/invoices/", draft, "inv-1")
    paid = twice(f"/api/billing/invoices/{created['id']}/pay/", {"method": "card"}, "pay-inv-1")

    assert db.session.scalar(select(func.count()).select_from(Invoice)) == 2
    assert {generated["id"], created["id"]} == set(db.session.scalars(select(Invoice.id)))
    assert [(p.id, p.amount_cents) for p in payments_of(customer.id)] == [(paid["id"], 4000)]


def test_a_billing_run_started_twice_with_one_key_starts_once(make_app, backends):
    if not backends["redis_url"]:
        pytest.skip("a billing run needs Redis")
    from rq import Queue

    queue = f"test-{RUN_ID}-idem-{uuid.uuid4().hex[:8]}"
    connection = redis.Redis.from_url(backends["redis_url"])
    try:
        with clean_context(make_app(RQ_QUEUE=queue)) as app:
            client = app.test_client()
            headers, _ = billing_token()
            answers = [client.post("/api/billing/bulk-generate/", json={"kind": "generate_monthly_invoices"},
                                   headers={**headers, KEY: "run-1"}) for _ in range(2)]

            assert [a.status_code for a in answers] == [202, 202]
            assert answers[1].headers["Idempotent-Replayed"] == "true"
            assert answers[1].get_data() == answers[0].get_data()
            assert answers[1].headers["Location"] == answers[0].json["data"]["progress_url"]
            assert db.session.scalar(select(func.count()).select_from(JobRun)) == 1
            assert Queue(queue, connection=connection).count == 1
    finally:
        Queue(queue, connection=connection).delete(delete_jobs=True)
        connection.close()


# --- real servers, real concurrency -------------------------------------------------------------------------------

def test_simultaneous_retries_through_gunicorn_make_one_payment_per_key(app, backends, tmp_path):
    customer = CustomerFactory()
    headers, _ = billing_token()
    senders, rounds = 16, 3
    tally: Counter = Counter()

    with gunicorn(backends, tmp_path / "gunicorn.log") as base:
        for round_ in range(rounds):
            body, key = payment_body(customer.id, 1000 + round_), f"burst-{round_}"
            start = threading.Barrier(senders)
            with ThreadPoolExecutor(senders) as pool:
                answers = list(pool.map(partial(send_together, start, base, body, {**headers, KEY: key}),
                                        range(senders)))
            late = call(base, "POST", PAYMENTS, body, {**headers, KEY: key})

            statuses = Counter(status for status, _, _ in answers)
            assert set(statuses) <= {201, 409}, answers  # never a 500, never a 422 for the same request
            originals = [a for a in answers if a[0] == 201 and "Idempotent-Replayed" not in a[1]]
            replays = [a for a in answers if a[0] == 201 and a[1].get("Idempotent-Replayed") == "true"]
            conflicts = [a for a in answers if a[0] == 409]
            assert len(originals) == 1 and len(originals) + len(replays) + len(conflicts) == senders
            assert all(body_ == originals[0][2] for _, _, body_ in replays)
            for _, answer_headers, raw in conflicts:
                assert json.loads(raw)["error"]["code"] == "CONFLICT" and answer_headers["Retry-After"] == "1"
            assert late[0] == 201 and late[1]["Idempotent-Replayed"] == "true" and late[2] == originals[0][2]
            tally.update(original=1, replayed=len(replays), conflict=len(conflicts))

    assert [p.amount_cents for p in payments_of(customer.id)] == [1000 + r for r in range(rounds)]
    assert [(k.key, k.state) for k in key_rows()] == [(f"burst-{r}", "done") for r in range(rounds)]
    print(f"\n{senders} simultaneous senders x {rounds} keys through gunicorn: {dict(tally)}")


def test_a_retry_while_the_first_request_runs_gets_409_then_the_replay(app):
    customer = CustomerFactory()
    headers, _ = billing_token()
    body, sent = payment_body(customer.id), {**headers, KEY: "held"}

    with serve_in_background(app) as base, ThreadPoolExecutor(1) as pool:
        with holding_row_lock(customer_lock(customer.id)) as (lock, pid):
            first = pool.submit(call, base, "POST", PAYMENTS, body, sent)
            wait_until(lambda: lock_waiters(pid) == 1, "the first request to wait for the customer row")

            retry = call(base, "POST", PAYMENTS, body, sent)

            assert retry[0] == 409 and json.loads(retry[2])["error"]["code"] == "CONFLICT"
            assert retry[1]["Retry-After"] == "1"
            assert not first.done() and payments_of(customer.id) == []
            lock.rollback()
            status, first_headers, first_body = first.result(timeout=30)
        replay = call(base, "POST", PAYMENTS, body, sent)

    assert status == 201 and "Idempotent-Replayed" not in first_headers
    assert replay[0] == 201 and replay[1]["Idempotent-Replayed"] == "true" and replay[2] == first_body
    assert len(payments_of(customer.id)) == 1


def test_a_slow_request_keeps_its_key_however_long_it_runs(app, monkeypatch):
    """Only a lock held says the owner lives, not the claim's age: no grace at all, and the retry still waits."""
    monkeypatch.setattr(idempotency, "CLAIM_GRACE", timedelta(0))
    customer = CustomerFactory()
    headers, _ = billing_token()
    body, sent = payment_body(customer.id), {**headers, KEY: "slow"}

    with (serve_in_background(app) as base, ThreadPoolExecutor(1) as pool,
          holding_row_lock(customer_lock(customer.id)) as (lock, pid)):
        slow = pool.submit(call, base, "POST", PAYMENTS, body, sent)
        wait_until(lambda: lock_waiters(pid) == 1, "the first request to wait for the customer row")

        retry = call(base, "POST", PAYMENTS, body, sent)

        assert retry[0] == 409 and json.loads(retry[2])["error"]["code"] == "CONFLICT"
        assert not slow.done() and payments_of(customer.id) == []
        lock.rollback()
        slow_answer = slow.result(timeout=30)

    assert slow_answer[0] == 201 and "Idempotent-Replayed" not in slow_answer[1]
    [payment] = payments_of(customer.id)
    assert payment.id == json.loads(slow_answer[2])["data"]["id"]

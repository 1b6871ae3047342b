"""Idempotency-Key on API writes, with Stripe's semantics, kept per token for at least KEY_TTL.

- first request with a key: its claim is committed before the work starts, so a concurrent retry sees it;
- same key, same request while the first still runs: 409 CONFLICT (retry shortly);
- same key, same request after it succeeded: the stored response, byte for byte, with Idempotent-Replayed: true;
- same key, different request: 422 VALIDATION_ERROR;
- a request that fails (any 4xx/5xx) releases its key, so the client may correct it and retry with the same key.

The stored response is written in the same transaction as the work itself: either both commit or neither does,
so a crash mid-request leaves only an in-flight claim. The release runs on a fresh connection (the failed
request's own may be dead) and deletes only an in-flight claim (a commit whose answer was lost may have stored it).

Ownership is provable without waiting: on PostgreSQL the work transaction first locks its key row (FOR UPDATE,
checking the claim is still its own), so while the owner lives the row is locked, and when its transaction ends
in any way (rolled back, its connection cut, its process killed) PostgreSQL drops the lock. A retry that finds the
key in flight tries the lock with SKIP LOCKED: locked means the owner is alive (409); free means it is gone, and
the retry takes the key over at once. CLAIM_GRACE only covers the moment between committing a claim and locking
it. SQLite has no row locks, so there a claim is taken over once it is STALE_CLAIM_WITHOUT_LOCKS old. Every change
of a claim is a compare-and-set on (claim, state), so a takeover and the original finishing never both win.
Keys older than KEY_TTL may be used again; `flask data cleanup-old-data` deletes them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import secrets
from datetime import timedelta
from functools import wraps

from flask import Response, g, request
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import AppError, Conflict, error_response
from isp_admin.extensions import db
from isp_admin.models import IdempotencyKey
from isp_admin.models.base import utcnow
from isp_admin.services.platform.retention import IDEMPOTENCY_KEY_TTL as KEY_TTL

log = logging.getLogger(__name__)
HEADER = "Idempotency-Key"
CLAIM_ATTEMPTS = 3
# A claim is committed, then locked by its work transaction a few milliseconds later; a retry must not read the
# unlocked row in between as abandoned (it would be safe, the compare-and-set decides, but it would cost the
# original its answer). A retry told 409 comes back after Retry-After: 1.
CLAIM_GRACE = timedelta(seconds=1)
# Without row locks (SQLite, the bare-machine default) only time says an owner is gone; a takeover of a live one
# is still safe (SQLite has one writer, and the response is stored by compare-and-set), it only costs an answer.
STALE_CLAIM_WITHOUT_LOCKS = timedelta(seconds=10)
RELEASE_LOCK_TIMEOUT_MS = 2000  # a release never waits long on a row a dying connection still locks
MAX_KEY_LENGTH = 255


def request_fingerprint() -> str:
    """Hash the method, path and JSON body (canonical: key order and spacing do not matter)."""
    raw = request.get_data(cache=True)
    try:
        body = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")) if raw else ""
    except ValueError:
        body = raw.decode("utf-8", "replace")
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def _bad_key(message: str):
    return error_response(400, "VALIDATION_ERROR", message, {HEADER: message})


def _claim(token_id: int, key: str, fingerprint: str) -> tuple[IdempotencyKey, str | None]:
    """Claim `key` for this request; return (row, claim) when this request may run, else (existing row, None)."""
    for _ in range(CLAIM_ATTEMPTS):
        now, claim = utcnow(), secrets.token_hex(16)
        row = IdempotencyKey(token_id=token_id, key=key, request_hash=fingerprint, method=request.method,
                             path=request.path[:255], state="in_flight", claim=claim, created_at=now,
                             claimed_at=now)
        db.session.add(row)
        try:
            db.session.commit()  # the claim must be visible to concurrent retries before any work starts
            return row, claim
        except IntegrityError:
            db.session.rollback()
        existing = db.session.scalar(select(IdempotencyKey).where(IdempotencyKey.token_id == token_id,
                                                                  IdempotencyKey.key == key))
        if existing is None:  # released between our insert and this read: claim again
            continue
        expired = existing.created_at <= now - KEY_TTL
        abandoned = (existing.state == "in_flight" and existing.request_hash == fingerprint
                     and _owner_gone(existing, now))
        if expired or abandoned:
            # Take over with a compare-and-set on the claim *and* its state: of two takers exactly one wins, and
            # an original that stored its response meanwhile (state now done) keeps it.
            taken = db.session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.id == existing.id, IdempotencyKey.claim == existing.claim,
                       IdempotencyKey.state == existing.state)
                .values(request_hash=fingerprint, method=request.method, path=request.path[:255],
                        state="in_flight", claim=claim, response_status=None, response_body=None,
                        response_location=None, created_at=now, claimed_at=now)).rowcount
            db.session.commit()
            if taken:
                return db.session.get(IdempotencyKey, existing.id), claim
        # Someone else holds the key: read it afresh (it may have finished, or been released: then claim again).
        db.session.rollback()  # ends the read's transaction (and drops a lock _owner_gone took on a changed claim)
        current = db.session.get(IdempotencyKey, existing.id)
        if current is not None:
            return current, None
    # Only a key released and re-claimed by others on every attempt, or a token deleted mid-request, ends here.
    raise Conflict("This Idempotency-Key is contended; retry in a moment.", {HEADER: "Contended."})


def _locks_rows() -> bool:
    return db.engine.dialect.name == "postgresql"


def _owner_gone(existing: IdempotencyKey, now) -> bool:
    """Whether the request holding `existing`'s in-flight claim has ended without finishing it.

    On PostgreSQL a True answer leaves the row locked by this transaction until the takeover commits.
    """
    if not _locks_rows():
        return existing.claimed_at <= now - STALE_CLAIM_WITHOUT_LOCKS
    if existing.claimed_at > now - CLAIM_GRACE:
        return False
    # The owner's work transaction holds this row lock for as long as it runs; a free lock on a row still in
    # flight under the same claim means that transaction is over and never stored a response.
    free = db.session.scalar(
        select(IdempotencyKey.id)
        .where(IdempotencyKey.id == existing.id, IdempotencyKey.claim == existing.claim,
               IdempotencyKey.state == "in_flight")
        .with_for_update(skip_locked=True))
    return free is not None


def _hold(row_id: int, claim: str) -> bool:
    """Start the work transaction by locking our key row; False when our claim was taken over meanwhile."""
    held = db.session.scalar(
        select(IdempotencyKey.id)
        .where(IdempotencyKey.id == row_id, IdempotencyKey.claim == claim, IdempotencyKey.state == "in_flight")
        .with_for_update())
    return held is not None


def _taken_over():
    return error_response(409, "CONFLICT", "This Idempotency-Key was taken over by a later retry.",
                          {HEADER: "Taken over."}, headers={"Retry-After": "1"})


def _replay(existing: IdempotencyKey, fingerprint: str):
    if existing.request_hash != fingerprint:
        return error_response(422, "VALIDATION_ERROR",
                              "This Idempotency-Key was already used for a different request.",
                              {HEADER: "Reused with a different method, path or body; use a new key."})
    if existing.state == "in_flight":
        return error_response(409, "CONFLICT", "A request with this Idempotency-Key is still in progress; "
                              "retry in a moment.", {HEADER: "In progress."}, headers={"Retry-After": "1"})
    response = Response(existing.response_body, status=existing.response_status, mimetype="application/json")
    if existing.response_location:
        response.headers["Location"] = existing.response_location
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _release(row_id: int, claim: str) -> None:
    """Free a failed request's key at once, on a fresh connection: the request's own may be dead."""
    try:
        db.session.rollback()  # ends the work transaction, and with it our row lock
    except Exception:  # noqa: BLE001  (a dead connection: PostgreSQL has already ended the transaction)
        log.warning("rollback of a failed Idempotency-Key request failed", exc_info=True)
    try:
        with db.engine.connect() as connection:
            if _locks_rows():
                connection.execute(text(f"SET LOCAL lock_timeout = {RELEASE_LOCK_TIMEOUT_MS}"))
            # Only while in flight: a commit whose acknowledgement was lost may have stored the response, and
            # deleting that would let a retry record the payment twice.
            connection.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id, IdempotencyKey.claim == claim,
                                                            IdempotencyKey.state == "in_flight"))
            connection.commit()
    except Exception:  # noqa: BLE001  (the failure being reported matters more; the claim is taken over instead)
        log.warning("could not release Idempotency-Key claim %s; a retry takes it over once its request is gone",
                    row_id, exc_info=True)


def idempotent(view):
    """Run a POST at most once per (token, Idempotency-Key); commit its work with its stored response.

    Without the header the view runs as a plain transactional write.
    """

    @wraps(view)
    def run(*args, **kwargs):
        key = request.headers.get(HEADER)
        if key is None:
            return _commit_or_report(view, args, kwargs)
        key = key.strip()
        if not key or len(key) > MAX_KEY_LENGTH or not key.isascii() or not key.isprintable():
            return _bad_key(f"An {HEADER} is 1 to {MAX_KEY_LENGTH} printable ASCII characters.")
        fingerprint, token_id = request_fingerprint(), g.api_token.id
        row, claim = _claim(token_id, key, fingerprint)
        if claim is None:
            return _replay(row, fingerprint)
        row_id = row.id
        g.idempotency_key = key
        # A key used again after KEY_TTL starts a new generation: services that keep their own copy of the key
        # (a payment's idempotency_key) scope it by generation, so the reused key may name a new record.
        g.idempotency_scope = f"api-token:{token_id}:{row.created_at:%Y%m%d%H%M%S%f}"
        try:
            if not _hold(row_id, claim):  # a retry took the key over between our claim and this lock
                db.session.rollback()
                return _taken_over()
            response = view(*args, **kwargs)
        except AppError as exc:
            _release(row_id, claim)
            return error_response(exc.status, exc.code, exc.message, exc.details)
        except Exception:
            _release(row_id, claim)
            raise
        response = _as_response(response)
        if response.status_code >= 400:
            _release(row_id, claim)
            return response
        try:
            stored = db.session.execute(
                update(IdempotencyKey)
                .where(IdempotencyKey.id == row_id, IdempotencyKey.claim == claim, IdempotencyKey.state == "in_flight")
                .values(state="done", response_status=response.status_code,
                        response_body=response.get_data(as_text=True),
                        response_location=response.headers.get("Location"))).rowcount
            if stored:
                db.session.commit()
        except Exception:
            # A failed commit (a lost connection, a serialization failure) undid the work: free the key at once
            # rather than answer 409 to every retry until the claim goes stale.
            _release(row_id, claim)
            raise
        if not stored:  # (SQLite) our claim went stale and a retry took the key over: its work stands, not ours
            db.session.rollback()
            return _taken_over()
        return response

    run.idempotent = True
    return run


def _as_response(result) -> Response:
    from flask import make_response

    return make_response(result)


def transactional(view):
    """Commit what a write view did when it answers below 400; otherwise roll back and answer the error."""

    @wraps(view)
    def run(*args, **kwargs):
        return _commit_or_report(view, args, kwargs)

    return run


def _commit_or_report(view, args, kwargs):
    try:
        result = view(*args, **kwargs)
    except AppError as exc:
        db.session.rollback()
        return error_response(exc.status, exc.code, exc.message, exc.details)
    response = _as_response(result)
    if response.status_code < 400:
        db.session.commit()
    else:
        db.session.rollback()
    return response

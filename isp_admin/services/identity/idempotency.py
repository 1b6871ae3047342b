"""Idempotency keys (the API's Idempotency-Key), as rows: claimed, held while the work runs, stored or released.

The protocol (isp_admin.api.idempotency is its HTTP side):
- a claim is committed before the work starts, so a concurrent retry sees it (the caller's `commit` does it);
- the work transaction first locks its key row (`hold`, FOR UPDATE, checking the claim is still its own), so
  while the owner lives the row is locked, and when its transaction ends in any way (rolled back, its connection
  cut, its process killed) PostgreSQL drops the lock. A retry that finds the key in flight tries the lock with
  SKIP LOCKED: locked means the owner is alive; free means it is gone, and the retry takes the key over at once.
  CLAIM_GRACE only covers the moment between committing a claim and locking it. SQLite has no row locks, so
  there a claim is taken over once it is STALE_CLAIM_WITHOUT_LOCKS old;
- the response is stored in the same transaction as the work (`store_response`): both commit or neither does;
- a failed request's claim is released on a transaction of its own (`release`): the request's connection may
  be dead. Only an in-flight claim is deleted: a commit whose answer was lost may have stored the response.
Every change of a claim is a compare-and-set on (claim, state), so a takeover and the original finishing never
both win. Keys older than KEY_TTL may be used again; `flask data cleanup-old-data` deletes them.
"""
from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import delete, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import Conflict
from isp_admin.extensions import db
from isp_admin.models import IdempotencyKey
from isp_admin.models.base import utcnow
from isp_admin.services.platform.retention import IDEMPOTENCY_KEY_TTL as KEY_TTL

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


def claim(token_id: int, key: str, fingerprint: str, method: str, path: str,
          commit: Callable[[], None]) -> tuple[IdempotencyKey, str | None]:
    """Claim `key` for this request; return (row, claim) when this request may run, else (existing row, None).

    `commit` is the edge's: the claim must be visible to concurrent retries before any work starts.
    """
    path = path[:255]
    for _ in range(CLAIM_ATTEMPTS):
        now, mine = utcnow(), secrets.token_hex(16)
        row = IdempotencyKey(token_id=token_id, key=key, request_hash=fingerprint, method=method, path=path,
                             state="in_flight", claim=mine, created_at=now, claimed_at=now)
        db.session.add(row)
        try:
            commit()
            return row, mine
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
                .values(request_hash=fingerprint, method=method, path=path, state="in_flight", claim=mine,
                        response_status=None, response_body=None, response_location=None, created_at=now,
                        claimed_at=now)).rowcount
            commit()
            if taken:
                return db.session.get(IdempotencyKey, existing.id), mine
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


def hold(row_id: int, mine: str) -> bool:
    """Start the work transaction by locking our key row; False when our claim was taken over meanwhile."""
    held = db.session.scalar(
        select(IdempotencyKey.id)
        .where(IdempotencyKey.id == row_id, IdempotencyKey.claim == mine, IdempotencyKey.state == "in_flight")
        .with_for_update())
    return held is not None


def store_response(row_id: int, mine: str, status: int, body: str, location: str | None) -> bool:
    """Store the answer in the work's transaction; False when a retry took the key over (SQLite, a stale claim)."""
    return bool(db.session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.id == row_id, IdempotencyKey.claim == mine, IdempotencyKey.state == "in_flight")
        .values(state="done", response_status=status, response_body=body, response_location=location)).rowcount)


def release(connection: Connection, row_id: int, mine: str) -> None:
    """Delete a failed request's in-flight claim, on `connection` (a transaction of its own)."""
    if _locks_rows():
        connection.execute(text(f"SET LOCAL lock_timeout = {RELEASE_LOCK_TIMEOUT_MS}"))
    # Only while in flight: a commit whose acknowledgement was lost may have stored the response, and deleting
    # that would let a retry record the payment twice.
    connection.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id, IdempotencyKey.claim == mine,
                                                    IdempotencyKey.state == "in_flight"))

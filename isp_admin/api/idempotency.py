"""Idempotency-Key on API writes, with Stripe's semantics, kept per token for at least KEY_TTL.

- first request with a key: its claim is committed before the work starts, so a concurrent retry sees it;
- same key, same request while the first still runs: 409 CONFLICT (retry shortly);
- same key, same request after it succeeded: the stored response, byte for byte, with Idempotent-Replayed: true;
- same key, different request: 422 VALIDATION_ERROR;
- a request that fails (any 4xx/5xx) releases its key, so the client may correct it and retry with the same key.

The stored response is written in the same transaction as the work itself: either both commit or neither does,
so a crash mid-request leaves only an in-flight claim, which a retry may take over after STALE_CLAIM. Every
change of a claim is a compare-and-set on (claim, state), so a takeover and the original finishing never both win.
Keys older than KEY_TTL may be used again; `flask data cleanup-old-data` deletes them.
"""
from __future__ import annotations

import hashlib
import json
import secrets
from datetime import timedelta
from functools import wraps

from flask import Response, g, request
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import AppError, Conflict, error_response
from isp_admin.extensions import db
from isp_admin.models import IdempotencyKey
from isp_admin.models.base import utcnow
from isp_admin.services.retention import IDEMPOTENCY_KEY_TTL as KEY_TTL

HEADER = "Idempotency-Key"
CLAIM_ATTEMPTS = 3
STALE_CLAIM = timedelta(minutes=5)  # far longer than any API request may run (gunicorn times out first)
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
        abandoned = existing.state == "in_flight" and existing.claimed_at <= now - STALE_CLAIM
        if not (expired or (abandoned and existing.request_hash == fingerprint)):
            return existing, None
        # Take over with a compare-and-set on the claim *and* its state: of two takers exactly one wins, and a
        # stale-looking original that stored its response meanwhile (state now done) keeps it.
        taken = db.session.execute(
            update(IdempotencyKey).where(IdempotencyKey.id == existing.id, IdempotencyKey.claim == existing.claim,
                                         IdempotencyKey.state == existing.state)
            .values(request_hash=fingerprint, method=request.method, path=request.path[:255], state="in_flight",
                    claim=claim, response_status=None, response_body=None, response_location=None,
                    created_at=now, claimed_at=now)).rowcount
        db.session.commit()
        if taken:
            return db.session.get(IdempotencyKey, existing.id), claim
        db.session.expire(existing)
        return existing, None
    # Only a key released and re-claimed by others on every attempt, or a token deleted mid-request, ends here.
    raise Conflict("This Idempotency-Key is contended; retry in a moment.", {HEADER: "Contended."})


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
    db.session.rollback()
    db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.id == row_id, IdempotencyKey.claim == claim))
    db.session.commit()


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
        if not stored:  # our claim went stale and another request took the key over: its work stands, not ours
            db.session.rollback()
            return error_response(409, "CONFLICT", "This Idempotency-Key was taken over by a later retry.",
                                  {HEADER: "Taken over."}, headers={"Retry-After": "1"})
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

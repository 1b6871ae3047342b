"""Idempotency-Key on API writes, with Stripe's semantics, kept per token for at least KEY_TTL.

- first request with a key: its claim is committed before the work starts, so a concurrent retry sees it;
- same key, same request while the first still runs: 409 CONFLICT (retry shortly);
- same key, same request after it succeeded: the stored response, byte for byte, with Idempotent-Replayed: true;
- same key, different request: 422 VALIDATION_ERROR;
- a request that fails (any 4xx/5xx) releases its key, so the client may correct it and retry with the same key.

This is the HTTP side; the key rows and their claim protocol are isp_admin.services.identity.idempotency's.
The stored response is written in the same transaction as the work itself: either both commit or neither does,
so a crash mid-request leaves only an in-flight claim, which a retry takes over once its owner is gone.
"""
from __future__ import annotations

import hashlib
import json
import logging
from functools import wraps

from flask import Response, g, make_response, request

from isp_admin.errors import AppError, error_response
from isp_admin.services.identity import idempotency as keys
from isp_admin.services.identity.idempotency import HEADER, KEY_TTL
from isp_admin.unit_of_work import commit_once, commit_step, discard, separate_transaction

__all__ = ["HEADER", "KEY_TTL", "idempotent", "request_fingerprint", "transactional"]
log = logging.getLogger(__name__)
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


def _taken_over():
    return error_response(409, "CONFLICT", "This Idempotency-Key was taken over by a later retry.",
                          {HEADER: "Taken over."}, headers={"Retry-After": "1"})


def _replay(existing, fingerprint: str):
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
    """Free a failed request's key at once, on a transaction of its own: the request's connection may be dead."""
    discard()  # ends the work transaction, and with it our row lock
    try:
        with separate_transaction() as connection:
            keys.release(connection, row_id, claim)
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
        try:
            row, claim = keys.claim(token_id, key, fingerprint, request.method, request.path, commit_step)
        except AppError as exc:
            discard()
            return error_response(exc.status, exc.code, exc.message, exc.details)
        if claim is None:
            return _replay(row, fingerprint)
        row_id = row.id
        g.idempotency_key = key
        # A key used again after KEY_TTL starts a new generation: services that keep their own copy of the key
        # (a payment's idempotency_key) scope it by generation, so the reused key may name a new record.
        g.idempotency_scope = f"api-token:{token_id}:{row.created_at:%Y%m%d%H%M%S%f}"
        try:
            if not keys.hold(row_id, claim):  # a retry took the key over between our claim and this lock
                discard()
                return _taken_over()
            response = view(*args, **kwargs)
        except AppError as exc:
            _release(row_id, claim)
            return error_response(exc.status, exc.code, exc.message, exc.details)
        except Exception:
            _release(row_id, claim)
            raise
        response = make_response(response)
        if response.status_code >= 400:
            _release(row_id, claim)
            return response
        try:
            stored = keys.store_response(row_id, claim, response.status_code, response.get_data(as_text=True),
                                         response.headers.get("Location"))
            if stored:
                commit_step()  # the work and its stored answer, together
        except Exception:
            # A failed commit (a lost connection, a serialization failure) undid the work: free the key at once
            # rather than answer 409 to every retry until the claim goes stale.
            _release(row_id, claim)
            raise
        if not stored:  # (SQLite) our claim went stale and a retry took the key over: its work stands, not ours
            discard()
            return _taken_over()
        return response

    run.idempotent = True
    return run


def transactional(view):
    """Commit what a write view did when it answers below 400; otherwise roll back and answer the error."""

    @wraps(view)
    def run(*args, **kwargs):
        return _commit_or_report(view, args, kwargs)

    return run


def _commit_or_report(view, args, kwargs):
    try:
        return commit_once(lambda: make_response(view(*args, **kwargs)), keep=lambda r: r.status_code < 400)
    except AppError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details)

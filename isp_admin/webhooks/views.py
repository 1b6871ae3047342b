"""POST /webhooks/<provider>/ (signed by the provider) and /webhooks/<provider>/<public_id>/<token>/ (a callback
URL we gave for one attempt, whose secret is the token). One generic edge for every provider: the provider
verifies and reads, services.payments.events records, exactly once.

Answers: 200 once stored (a replay too: the provider must stop retrying), 400 for anything not genuine (nothing
is stored), 503 when the database is away (the provider retries later). Never a page: these are machines.
"""
from __future__ import annotations

import logging

from flask import Blueprint, jsonify, request

from isp_admin.access import PUBLIC, access
from isp_admin.errors import AppError
from isp_admin.services.payments import attempts as attempt_service
from isp_admin.services.payments.events import apply_notice
from isp_admin.services.payments.providers import registry
from isp_admin.services.payments.providers.base import InvalidNotification
from isp_admin.services.platform.clock import today
from isp_admin.unit_of_work import commit_once

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
log = logging.getLogger(__name__)


def _refuse(reason: str, status: int = 400):
    log.warning("provider notification refused", extra={"reason": reason, "path": request.path})
    return jsonify({"received": False, "error": reason}), status


def _apply_all(provider_name: str, notices) -> list[str]:
    outcomes = []
    for notice in notices:  # one transaction each: a replayed first one must not hold back the second
        event = commit_once(apply_notice, provider_name, notice, today())
        outcomes.append(event.outcome)
    return outcomes


@bp.post("/<name>/")
@access(PUBLIC)
def signed(name: str):
    """A notification signed by the provider (Stripe's Stripe-Signature)."""
    if name not in registry.names():
        return _refuse("unknown provider", 404)
    provider = registry.get_provider(name)
    try:
        notices = provider.parse(request.get_data(cache=False), dict(request.headers))
    except InvalidNotification as exc:
        return _refuse(str(exc) or "not a genuine notification")
    try:
        outcomes = _apply_all(name, notices)
    except AppError as exc:  # e.g. a refused payment: stored nothing, the provider will retry, staff see the log
        log.error("provider notification not applied", extra={"provider": name, "error": exc.message})
        return _refuse(exc.message, 422)
    return jsonify({"received": True, "outcomes": outcomes})


@bp.post("/<name>/<public_id>/<token>/")
@access(PUBLIC)
def callback(name: str, public_id: str, token: str):
    """A callback to the URL we gave for one attempt (M-Pesa's STK result); the URL's secret authenticates it."""
    if name not in registry.names():
        return _refuse("unknown provider", 404)
    attempt = attempt_service.attempt_by_public_id(public_id)
    if attempt is None or attempt.provider != name or not attempt_service.token_matches(attempt, token):
        return _refuse("unknown callback", 404)  # the same answer for a wrong id and a wrong token
    provider = registry.get_provider(name)
    try:
        notices = provider.parse(request.get_data(cache=False), dict(request.headers), token=token, attempt=attempt)
    except InvalidNotification as exc:
        return _refuse(str(exc) or "not a genuine notification")
    try:
        outcomes = _apply_all(name, notices)
    except AppError as exc:
        log.error("provider callback not applied", extra={"provider": name, "error": exc.message})
        return _refuse(exc.message, 422)
    # Daraja reads ResultCode/ResultDesc from the answer; other providers ignore the body.
    return jsonify({"ResultCode": 0, "ResultDesc": "Accepted", "received": True, "outcomes": outcomes})

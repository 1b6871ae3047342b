"""Payments: record (named invoice first, then oldest due, remainder is credit) and reverse."""
from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import Invoice, Payment, PaymentAllocation
from isp_admin.models.base import utcnow
from isp_admin.models.payments import PAYMENT_METHODS
from isp_admin.services.billing.ledger import (
    allocate_payment,
    apply_available_credit,
    lock_and_load,
    lock_customer,
    open_invoices,
    reactivate_if_paid,
    settle,
)
from isp_admin.services.platform import audit
from isp_admin.services.platform.bounds import MAX_AMOUNT_CENTS, check_text, date_error

# A payment like an earlier one recorded this recently is probably the same money entered twice (Back, then Record
# again; two people at two desks); staff confirm it, or leave it.
SIMILAR_WITHIN = timedelta(days=30)


class PossibleDuplicate(Conflict):
    """A payment like this one was recorded recently: recording it needs an explicit confirmation."""

    def __init__(self, similar: list[Payment]):
        super().__init__(
            "A payment like this one was already recorded recently. Check the list: if this is other money, "
            "tick “Record it anyway” and record it again.",
            {"confirm_duplicate": "Tick this to record the payment although it looks like one above."})
        self.similar_ids = [payment.id for payment in similar]


def similar_payments(customer_id: int, amount_cents: int | None, reference: str | None,
                     received_on: date) -> list[Payment]:
    """Return the customer's completed payments recorded recently for the same amount and the same reference (or,
    without a reference, received the same day): likely the same money recorded twice."""
    if not isinstance(amount_cents, int) or isinstance(amount_cents, bool):
        return []
    reference = (reference or "").strip() or None
    same = (func.lower(Payment.reference) == reference.lower()) if reference else \
        (Payment.received_on == received_on)
    return list(db.session.scalars(
        select(Payment).where(Payment.customer_id == customer_id, Payment.amount_cents == amount_cents,
                              Payment.status == "completed", Payment.created_at >= utcnow() - SIMILAR_WITHIN, same)
        .order_by(Payment.id.desc()).limit(20)))


def get_payment(payment_id: int) -> Payment:
    """Return a payment by id or raise NotFound."""
    payment = db.session.get(Payment, payment_id)
    if payment is None:
        raise NotFound("No such payment.")
    return payment


def fingerprint(values: dict) -> str:
    """Return a stable hash of a request's values, to tell a retry from a different request."""
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def _validate(amount_cents, method, received_on, today, reference) -> None:
    errors = {}
    if amount_cents is None:
        pass  # the named invoice's balance, read under the customer's lock
    elif not isinstance(amount_cents, int) or isinstance(amount_cents, bool) or amount_cents <= 0:
        errors["amount_cents"] = "An amount above zero."
    elif amount_cents > MAX_AMOUNT_CENTS:
        errors["amount_cents"] = "The amount is too large."
    if method not in PAYMENT_METHODS:
        errors["method"] = f"One of {', '.join(PAYMENT_METHODS)}."
    if not isinstance(received_on, date):
        errors["received_on"] = "A date."
    elif received_on > today:
        errors["received_on"] = "A payment cannot be received in the future."
    elif (why := date_error(received_on, today, future=False)) is not None:
        errors["received_on"] = why
    if reference is not None and len(reference) > 120:
        errors["reference"] = "At most 120 characters."
    if errors:
        raise Invalid("Please correct the payment.", errors)


def record_payment(customer_id: int, amount_cents: int | None, method: str, received_on: date, today: date, *,
                   reference: str | None = None, invoice_id: int | None = None,
                   idempotency_key: str | None = None, idempotency_scope: str = "web",
                   provider: str | None = None, provider_ref: str | None = None,
                   refuse_similar: bool = False) -> tuple[Payment, bool]:
    """Record a payment and allocate it; return (payment, created). A repeated key returns the first one.

    `amount_cents` None pays the named invoice's balance as it stands once the customer is locked (a
    double-clicked "pay" then finds the invoice paid and is refused, instead of paying it twice).
    `refuse_similar` raises PossibleDuplicate when similar_payments finds one: checked under the customer's lock,
    so two desks recording the same money at once see each other.
    """
    reference = (reference or "").strip() or None
    _validate(amount_cents, method, received_on, today, reference)
    request = {"customer_id": customer_id, "amount_cents": amount_cents, "method": method,
               "received_on": received_on, "reference": reference, "invoice_id": invoice_id}
    request_hash = fingerprint(request)
    customer = lock_customer(customer_id)  # retries of one key queue here, then find the first payment
    if idempotency_key:
        existing = db.session.scalar(select(Payment).where(Payment.idempotency_scope == idempotency_scope,
                                                           Payment.idempotency_key == idempotency_key))
        if existing is not None:
            if existing.request_fingerprint != request_hash:
                raise Conflict("This idempotency key was used for a different payment.",
                               {"idempotency_key": "Reused with different values."})
            return existing, False
    target = None
    if invoice_id is not None:
        target = db.session.get(Invoice, invoice_id)  # fresh: lock_customer forgot every earlier read
        if target is None or target.customer_id != customer.id:
            raise Invalid("That invoice is not this customer's.", {"invoice_id": "Not found for this customer."})
        if not target.is_open and amount_cents is None:
            raise BusinessRuleViolation(f"Invoice {target.number or target.id} has nothing to pay "
                                        f"(it is {target.status}).")
        if not target.is_open:
            raise BusinessRuleViolation(f"Invoice {target.number or target.id} is {target.status}; "
                                        "the payment would go to credit. Record it without an invoice.")
        if amount_cents is None:
            amount_cents = target.balance_cents
    if amount_cents is None:
        raise Invalid("Please correct the payment.", {"amount_cents": "An amount above zero."})
    if refuse_similar and (similar := similar_payments(customer.id, amount_cents, reference, received_on)):
        raise PossibleDuplicate(similar)
    payment = Payment(customer_id=customer.id, amount_cents=amount_cents, currency=current_app.config["CURRENCY"],
                      method=method, reference=reference, provider=provider, provider_ref=provider_ref,
                      idempotency_scope=idempotency_scope if idempotency_key else None,
                      idempotency_key=idempotency_key, request_fingerprint=request_hash, received_on=received_on,
                      status="completed", recorded_by=audit.current_actor().label)
    db.session.add(payment)
    try:
        with db.session.begin_nested():
            db.session.flush()
    except IntegrityError:
        # The customer lock serialises retries for one customer; a key reused across customers, or a provider
        # event recorded twice, ends here.
        if idempotency_key and db.session.scalar(select(Payment.id).where(
                Payment.idempotency_scope == idempotency_scope, Payment.idempotency_key == idempotency_key)):
            raise Conflict("This idempotency key was used for a different payment.",
                           {"idempotency_key": "Reused with different values."}) from None
        raise Conflict("This provider payment is already recorded.", {"provider_ref": "Duplicate."}) from None
    audit.record("payment.record", payment, after={"amount_cents": amount_cents, "method": method,
                                                    "reference": reference, "invoice_id": invoice_id},
                 customer_id=customer.id)
    invoices = open_invoices(customer.id)
    if target is not None:
        invoices = [target] + [i for i in invoices if i.id != target.id]
    allocate_payment(payment, amount_cents, invoices, today)
    db.session.flush()
    apply_available_credit(customer.id, today)  # older unapplied money, if any, now has somewhere to go
    reactivate_if_paid(customer.id, today)
    from isp_admin.services.reporting.dashboard import invalidate_dashboard
    from isp_admin.services.reporting.reports import invalidate_reports

    invalidate_dashboard()
    invalidate_reports()
    return payment, True


def reverse_payment(payment_id: int, reason: str, today: date) -> Payment:
    """Reverse a payment (a bounced transfer): its allocations are undone and the invoices reopen."""
    if not (reason or "").strip():
        raise Invalid("Say why the payment is reversed.", {"reason": "Required."})
    check_text("reason", reason)
    payment = lock_and_load(Payment, payment_id, "No such payment.")
    if payment.status == "reversed":
        raise BusinessRuleViolation("This payment is already reversed.")
    now = utcnow()
    payment.status, payment.reversed_at, payment.reversal_reason = "reversed", now, reason.strip()
    touched = []
    for allocation in db.session.scalars(select(PaymentAllocation).where(
            PaymentAllocation.payment_id == payment.id, PaymentAllocation.reversed_at.is_(None))):
        allocation.reversed_at = now
        invoice = db.session.get(Invoice, allocation.invoice_id)
        if invoice.status != "void":
            invoice.amount_paid_cents -= allocation.amount_cents
            touched.append(invoice)
    db.session.flush()
    for invoice in touched:
        settle(invoice, today)
    audit.record("payment.reverse", payment, before={"status": "completed"},
                 after={"status": "reversed", "reason": reason.strip()}, customer_id=payment.customer_id)
    db.session.flush()
    # The customer's other unapplied money (credit) now has somewhere to go, as after any ledger change.
    apply_available_credit(payment.customer_id, today)
    from isp_admin.services.reporting.reports import invalidate_reports

    invalidate_reports()
    return payment


def allocations_of(payment_id: int) -> list[tuple[PaymentAllocation, Invoice]]:
    """Return a payment's allocations with their invoices."""
    return list(db.session.execute(
        select(PaymentAllocation, Invoice).join(Invoice, Invoice.id == PaymentAllocation.invoice_id)
        .where(PaymentAllocation.payment_id == payment_id).order_by(PaymentAllocation.id)).all())

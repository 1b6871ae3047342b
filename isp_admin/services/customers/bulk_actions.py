"""Bulk actions on the customer list: suspend a customer's service by hand, and resume what was suspended by hand.

Each row is a customer, and the action goes through subscriptions.suspend and subscriptions.resume for each of its
subscriptions (each audited there, once). A suspension for non-payment is the collections' to lift (it ends when the
debt is paid), so resume leaves it alone, as the subscription page does.
"""
from __future__ import annotations

from datetime import date

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import Customer, Subscription
from isp_admin.services.billing.ledger import lock_customer
from isp_admin.services.customers import subscriptions
from isp_admin.services.customers.subscriptions import MANUAL_REASONS
from isp_admin.services.platform.bulk_actions import BulkAction, Outcome, Row

SUSPEND_REASON = "manual"


def _rows(ids: list[int]) -> list[Row]:
    """The customers with their live subscriptions' (status, suspension reason)."""
    customers = db.session.execute(select(Customer.id, Customer.name, Customer.account_number)
                                   .where(Customer.id.in_(ids))).all()
    services: dict[int, list] = {c.id: [] for c in customers}
    for customer_id, status, reason in db.session.execute(
            select(Subscription.customer_id, Subscription.status, Subscription.suspension_reason)
            .where(Subscription.customer_id.in_(ids), Subscription.status != "cancelled")):
        services[customer_id].append((status, reason))
    return [Row(c.id, c.id, f"{c.account_number} · {c.name}", {"services": services[c.id]}) for c in customers]


def _plural(n: int) -> str:
    return f"{n} subscription{'' if n == 1 else 's'}"


def _would_suspend(services: list[tuple]) -> Outcome:
    active = sum(1 for status, _ in services if status == "active")
    if not active:
        return Outcome("skipped_no_active_service", "No active subscription to suspend.")
    return Outcome("suspended", f"Suspend {_plural(active)} (reason: {SUSPEND_REASON}).")


def _would_resume(services: list[tuple]) -> Outcome:
    by_hand = sum(1 for status, reason in services if status == "suspended" and reason in MANUAL_REASONS)
    if by_hand:
        return Outcome("resumed", f"Resume {_plural(by_hand)}.")
    if any(status == "suspended" for status, _ in services):
        return Outcome("skipped_non_payment", "Suspended for non-payment: it resumes when the debt is paid.")
    return Outcome("skipped_not_suspended", "Nothing suspended by hand to resume.")


def _live_services(customer_id: int) -> list[Subscription]:
    """The customer's subscriptions read fresh, under the lock its caller took."""
    lock_customer(customer_id)
    return list(db.session.scalars(select(Subscription).where(Subscription.customer_id == customer_id,
                                                              Subscription.status != "cancelled")
                                   .order_by(Subscription.id).execution_options(populate_existing=True)))


def suspend_customer(customer_id: int, today: date) -> Outcome:
    """Suspend each active subscription of the customer by hand; skip a customer with none active."""
    services = _live_services(customer_id)
    planned = _would_suspend([(s.status, s.suspension_reason) for s in services])
    if planned.skipped:
        return planned
    ids = [s.id for s in services if s.status == "active"]
    for subscription_id in ids:
        subscriptions.suspend(subscription_id, SUSPEND_REASON)
    return Outcome("suspended", f"{_plural(len(ids))} suspended.")


def resume_customer(customer_id: int, today: date) -> Outcome:
    """Resume each subscription of the customer suspended by hand (billing restarts, prorated)."""
    services = _live_services(customer_id)
    planned = _would_resume([(s.status, s.suspension_reason) for s in services])
    if planned.skipped:
        return planned
    ids = [s.id for s in services if s.status == "suspended" and s.suspension_reason in MANUAL_REASONS]
    for subscription_id in ids:
        subscriptions.resume(subscription_id)
    return Outcome("resumed", f"{_plural(len(ids))} resumed.")


ACTIONS = {
    "suspend": BulkAction("suspend", "Suspend service", "customer", _rows,
                          lambda row, today: _would_suspend(row.state["services"]), suspend_customer),
    "resume": BulkAction("resume", "Resume service", "customer", _rows,
                         lambda row, today: _would_resume(row.state["services"]), resume_customer),
}

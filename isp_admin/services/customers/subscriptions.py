"""Subscriptions: add, change plan, suspend, resume and cancel (service-state changes)."""
from __future__ import annotations

import ipaddress
import re
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import Subscription
from isp_admin.services.billing.ledger import lock_and_load, lock_customer
from isp_admin.services.customers.accounts import get_customer, refresh_status
from isp_admin.services.customers.money_effects import Outcome, dry_run, outcome_of
from isp_admin.services.customers.plans import get_plan
from isp_admin.services.customers.suspensions import close_suspension, open_suspension, restart_billing
from isp_admin.services.platform import audit
from isp_admin.services.platform.bounds import MAX_PRICE_CENTS, check_past_dates, check_service_dates
from isp_admin.services.platform.clock import today

MANUAL_REASONS = ("manual", "vacation")
_PPPOE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")


def get_subscription(subscription_id: int) -> Subscription:
    """Return a subscription by id or raise NotFound."""
    sub = db.session.get(Subscription, subscription_id)
    if sub is None:
        raise NotFound("No such subscription.")
    return sub


def _locked(subscription_id: int) -> Subscription:
    """The subscription, read fresh under its customer's lock (every write here starts with this)."""
    return lock_and_load(Subscription, subscription_id, "No such subscription.")


def _network_fields(pppoe_username: str | None, static_ip: str | None, cpe_mac: str | None) -> dict:
    errors, values = {}, {}
    pppoe = (pppoe_username or "").strip() or None
    if pppoe and not _PPPOE.match(pppoe):
        errors["pppoe_username"] = "Letters, digits and . _ @ - only (at most 64)."
    values["pppoe_username"] = pppoe
    ip = (static_ip or "").strip() or None
    if ip:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            errors["static_ip"] = "Enter a valid IPv4 or IPv6 address."
    values["static_ip"] = ip
    mac = (cpe_mac or "").strip() or None
    if mac and not _MAC.match(mac):
        errors["cpe_mac"] = "Enter a MAC address such as 00:1A:2B:3C:4D:5E."
    values["cpe_mac"] = mac.upper().replace("-", ":") if mac and not errors.get("cpe_mac") else mac
    if errors:
        raise Invalid("Please correct the highlighted fields.", errors)
    return values


def _ensure_network_ids_free(values: dict, subscription_id: int | None = None) -> None:
    errors = {}
    # A login is stored as typed but is the same login whatever its case (uq_subscriptions_pppoe_live is on
    # lower(pppoe_username), and RADIUS looks it up lower-cased), so ZOE.OBRIEN clashes with zoe.obrien.
    wanted = {"pppoe_username": (func.lower(Subscription.pppoe_username), (values.get("pppoe_username") or "").lower()),
              "static_ip": (Subscription.static_ip, values.get("static_ip"))}
    for column, (stored, value) in wanted.items():
        if value:
            clash = db.session.scalar(select(Subscription.id).where(
                stored == value, Subscription.status != "cancelled", Subscription.id != (subscription_id or 0)))
            if clash:
                errors[column] = "Already used by another live subscription."
    if errors:
        raise Conflict("A network identifier is already in use.", errors)


def _flush_guarding_network_ids() -> None:
    # The partial unique indexes are the real guard; a race between two requests ends here, not in a 500.
    # The caller's transaction is then unusable, so the error handler (or the view) rolls back.
    try:
        db.session.flush()
    except IntegrityError:
        raise Conflict("A network identifier is already in use.",
                       {"pppoe_username": "Check for duplicates.", "static_ip": "Check for duplicates."}) from None


def add_subscription(customer_id: int, plan_id: int, start_date: date, billing_day: int | None = None,
                     pppoe_username: str | None = None, static_ip: str | None = None,
                     cpe_mac: str | None = None, price_override_cents: int | None = None) -> Subscription:
    """Add a subscription; it is pending until its start date, then active."""
    check_service_dates(today(), start_date=start_date)
    if price_override_cents is not None and (isinstance(price_override_cents, bool) or not isinstance(
            price_override_cents, int) or not 0 <= price_override_cents <= MAX_PRICE_CENTS):
        raise Invalid("Please correct the price.", {"price_override_cents": f"0 to {MAX_PRICE_CENTS} cents."})
    customer = lock_customer(customer_id)
    if customer.status == "closed":
        raise BusinessRuleViolation("This customer's account is closed.")
    plan = get_plan(plan_id)
    if not plan.active:
        raise BusinessRuleViolation("This plan is retired; choose an active plan.", {"plan_id": "Retired."})
    billing_day = billing_day or min(start_date.day, 31)
    if not 1 <= billing_day <= 31:
        raise Invalid("Billing day must be between 1 and 31.", {"billing_day": "1 to 31."})
    if price_override_cents is not None and price_override_cents < 0:
        raise Invalid("The price cannot be negative.", {"price_override_cents": "Zero or more."})
    network = _network_fields(pppoe_username, static_ip, cpe_mac)
    _ensure_network_ids_free(network)
    sub = Subscription(
        customer_id=customer.id, plan_id=plan.id,
        status="pending" if start_date > today() else "active",
        start_date=start_date, billing_day=billing_day,
        # Billing is in advance: the first (prorated) period starts on the start date.
        next_bill_date=start_date, price_override_cents=price_override_cents, **network,
    )
    db.session.add(sub)
    _flush_guarding_network_ids()
    audit.record("subscription.create", sub, after=audit.snapshot(sub), customer_id=customer.id)
    refresh_status(customer)
    _changed()
    return sub


def update_network(subscription_id: int, pppoe_username: str | None, static_ip: str | None,
                   cpe_mac: str | None) -> Subscription:
    """Change a subscription's PPPoE login, static IP or CPE MAC."""
    network = _network_fields(pppoe_username, static_ip, cpe_mac)
    sub = _locked(subscription_id)
    if sub.status == "cancelled":
        raise BusinessRuleViolation("A cancelled subscription cannot be changed.")
    _ensure_network_ids_free(network, sub.id)
    return _apply(sub, "subscription.update", **network)


def change_plan(subscription_id: int, plan_id: int) -> Subscription:
    """Move a live subscription to another active plan today: credit the old plan's unused days of the billed
    period and charge the rest of it on the new plan (DESIGN §3)."""
    return change_plan_documents(subscription_id, plan_id).subscription


def preview_change_plan(subscription_id: int, plan_id: int) -> Outcome:
    """Return what change_plan would issue today, by running it in a savepoint that is then rolled back."""
    return dry_run(change_plan_documents, subscription_id, plan_id)


def change_plan_documents(subscription_id: int, plan_id: int) -> Outcome:
    """Change the plan as change_plan does; return the subscription and the invoice and credit note issued."""
    from isp_admin.services.billing.invoices import charge_rest_of_period, credit_unused_days, plan_changed_on

    sub = _locked(subscription_id)
    if sub.status == "cancelled":
        raise BusinessRuleViolation("A cancelled subscription cannot change plan.")
    plan = get_plan(plan_id)
    if not plan.active:
        raise BusinessRuleViolation("This plan is retired; choose an active plan.", {"plan_id": "Retired."})
    if plan.id == sub.plan_id:
        raise BusinessRuleViolation("The subscription is already on this plan.", {"plan_id": "Same plan."})
    day = today()
    if plan_changed_on(sub.id, day):
        raise BusinessRuleViolation("This subscription already changed plan today; change it again tomorrow.")
    note = credit_unused_days(sub, day, "plan_change", day)
    # An override is the subscription's price on any plan, so the rest of the period is charged at it again.
    price = plan.monthly_price_cents if sub.price_override_cents is None else sub.price_override_cents
    invoice = charge_rest_of_period(sub, day, price, plan.tax_rate_bp, plan.name, day)
    return outcome_of(_apply(sub, "subscription.change_plan", plan_id=plan.id), plan.name, invoice, note)


def suspend(subscription_id: int, reason: str) -> Subscription:
    """Suspend an active subscription by hand (manual or vacation); non-payment belongs to collections."""
    if reason not in MANUAL_REASONS:
        raise Invalid("Choose a reason: manual or vacation.", {"reason": "manual or vacation."})
    sub = _locked(subscription_id)
    if sub.status != "active":
        raise BusinessRuleViolation(f"Only an active subscription can be suspended (this one is {sub.status}).")
    open_suspension(sub, reason, today())
    return _apply(sub, "subscription.suspend", status="suspended", suspension_reason=reason)


def resume(subscription_id: int) -> Subscription:
    """Resume a subscription suspended by hand; a non-payment suspension ends when the debt is paid."""
    sub = _locked(subscription_id)
    if sub.status != "suspended":
        raise BusinessRuleViolation("Only a suspended subscription can be resumed.")
    if sub.suspension_reason not in MANUAL_REASONS:
        raise BusinessRuleViolation("This subscription is suspended for non-payment; it resumes when paid.")
    before = audit.snapshot(sub)
    sub.status, sub.suspension_reason = "active", None
    # Periods begun while active are billed; those begun while suspended are not; billing restarts today,
    # prorated (DESIGN §3).
    restart_billing(sub, today())
    return _apply(sub, "subscription.resume", before=before)


def cancel(subscription_id: int, end_date: date) -> Subscription:
    """Cancel a subscription as of `end_date`, its first unserved day, freeing its PPPoE login and IP."""
    return cancel_documents(subscription_id, end_date).subscription


def preview_cancel(subscription_id: int, end_date: date) -> Outcome:
    """Return what cancel would issue, by running it in a savepoint that is then rolled back."""
    return dry_run(cancel_documents, subscription_id, end_date)


def cancel_documents(subscription_id: int, end_date: date) -> Outcome:
    """Cancel as cancel does; return the subscription and the credit note issued for billed days from `end_date`.

    `end_date` is the first day not served: service stops at once, and days from it to the end of what was billed
    come back as a credit note.
    """
    sub = _locked(subscription_id)
    if sub.status == "cancelled":
        raise BusinessRuleViolation("This subscription is already cancelled.")
    check_past_dates(today(), end_date=end_date)
    if end_date < sub.start_date:
        raise Invalid("The end date cannot be before the start date.", {"end_date": "On or after the start."})
    if end_date > today():
        # Cancelling takes effect now (the login and IP are freed at once); a future date would be a lie.
        raise Invalid("A cancellation takes effect today; choose today or an earlier date.",
                      {"end_date": "Today or earlier."})
    from isp_admin.services.billing.invoices import credit_unused_days

    if sub.status == "suspended":
        close_suspension(sub.id, end_date)
    # Unused days of a period already billed in advance come back as a credit note.
    note = credit_unused_days(sub, end_date, "cancellation", today(), later_periods=True)
    sub = _apply(sub, "subscription.cancel", status="cancelled", suspension_reason=None, end_date=end_date)
    return outcome_of(sub, get_plan(sub.plan_id).name, None, note)


def approve_catch_up(subscription_id: int) -> Subscription:
    """Approve a held catch-up: the next run bills every due period of this subscription, then the hold rule
    applies again."""
    sub = _locked(subscription_id)
    if sub.billing_hold_reason is None:
        raise BusinessRuleViolation("This subscription is not held for review.")
    return _apply(sub, "subscription.approve_catch_up", billing_hold_reason=None, billing_held_on=None,
                  catch_up_approved=True)


def _apply(sub: Subscription, action: str, before: dict | None = None, **values) -> Subscription:
    before = before if before is not None else audit.snapshot(sub)
    for key, value in values.items():
        setattr(sub, key, value)
    _flush_guarding_network_ids()
    old, new = audit.changes(before, audit.snapshot(sub))
    audit.record(action, sub, before=old, after=new, customer_id=sub.customer_id)
    refresh_status(get_customer(sub.customer_id))
    _changed()
    return sub


def _changed() -> None:
    from isp_admin.services.reporting.dashboard import invalidate_dashboard

    invalidate_dashboard()


SUBSCRIPTION_ORDERINGS = ("id", "start_date", "next_bill_date")


def list_subscriptions(*, status: str | None = None, customer_id: int | None = None, plan_id: int | None = None,
                       search: str | None = None, started_from: date | None = None, started_to: date | None = None,
                       ordering: str = "-id", size: int = 50, after: str | None = None, before: str | None = None,
                       offset: int = 0):
    """Return one page of subscriptions matching the filters, with a capped count: two queries."""
    from isp_admin.database import escape_like
    from isp_admin.models import Customer, Plan
    from isp_admin.services.platform.pagination import keyset_by_id, ordering_column

    s, p, c = Subscription.__table__.c, Plan.__table__.c, Customer.__table__.c
    conditions = []
    for column, value in ((s.status, status), (s.customer_id, customer_id), (s.plan_id, plan_id)):
        if value is not None:
            conditions.append(column == value)
    if search and search.strip():
        pattern = f"%{escape_like(search.strip())}%"
        conditions.append(s.pppoe_username.ilike(pattern, escape="\\") | s.static_ip.ilike(pattern, escape="\\"))
    if started_from is not None:
        conditions.append(s.start_date >= started_from)
    if started_to is not None:
        conditions.append(s.start_date <= started_to)
    stmt = (select(s.id, s.customer_id, c.name.label("customer_name"), s.plan_id, p.name.label("plan_name"),
                   s.status, s.suspension_reason, s.start_date, s.end_date, s.billing_day, s.next_bill_date,
                   s.price_override_cents, s.pppoe_username, s.static_ip, s.cpe_mac, s.created_at, s.updated_at)
            .join(Plan.__table__, p.id == s.plan_id).join(Customer.__table__, c.id == s.customer_id)
            .where(*conditions))
    sort_col, descending = ordering_column(s, ordering, SUBSCRIPTION_ORDERINGS)
    return keyset_by_id(stmt, s.id, size, after, before, offset=offset, sort_col=sort_col, descending=descending)

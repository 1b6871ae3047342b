"""Service plans: create, edit, retire (a plan in use is never deleted)."""
from __future__ import annotations

import re

from flask import current_app
from sqlalchemy import exists, func, select

from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid, NotFound
from isp_admin.extensions import cache, db
from isp_admin.models import Plan, Subscription
from isp_admin.services.platform import audit
from isp_admin.services.platform.after_commit import forget_now_and_after_commit

FIELDS = ("code", "name", "download_mbps", "upload_mbps", "data_cap_gb", "monthly_price_cents",
          "setup_fee_cents", "tax_rate_bp")
_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$")
CHOICES_CACHE_KEY = "plans:choices"


def _validate(values: dict) -> dict:
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise Invalid("Unknown fields.", {name: "Not a plan field." for name in sorted(unknown)})
    errors = {}
    if "code" in values:
        values["code"] = (values["code"] or "").strip().upper()
        if not _CODE.match(values["code"]):
            errors["code"] = "Use 1–32 letters, digits, '-' or '_'."
    if "name" in values:
        values["name"] = (values["name"] or "").strip()
        if not values["name"]:
            errors["name"] = "Required."
        elif "\x00" in values["name"]:
            errors["name"] = "Contains a NUL character."
    for key in ("download_mbps", "upload_mbps"):
        if key in values and (not isinstance(values[key], int) or not 0 < values[key] <= 1_000_000):
            errors[key] = "A whole number of Mbps above zero."
    if values.get("data_cap_gb") is not None and (not isinstance(values["data_cap_gb"], int)
                                                  or values["data_cap_gb"] <= 0):
        errors["data_cap_gb"] = "Leave empty for unlimited, or a whole number of GB above zero."
    for key in ("monthly_price_cents", "setup_fee_cents"):
        if key in values and (not isinstance(values[key], int) or values[key] < 0):
            errors[key] = "An amount of zero or more."
    if "tax_rate_bp" in values and (not isinstance(values["tax_rate_bp"], int)
                                    or not 0 <= values["tax_rate_bp"] <= 10000):
        errors["tax_rate_bp"] = "Between 0% and 100%."
    if errors:
        raise Invalid("Please correct the highlighted fields.", errors)
    return values


def get_plan(plan_id: int) -> Plan:
    """Return a plan by id or raise NotFound."""
    plan = db.session.get(Plan, plan_id)
    if plan is None:
        raise NotFound("No such plan.")
    return plan


def _ensure_unique_code(code: str, plan_id: int | None = None) -> None:
    clash = db.session.scalar(select(Plan.id).where(Plan.code == code, Plan.id != (plan_id or 0)))
    if clash:
        raise Conflict("Another plan already uses this code.", {"code": "Already in use."})


def create_plan(**values) -> Plan:
    """Create an active plan priced in the ISP's currency."""
    values = _validate(values)
    missing = [k for k in ("code", "name", "download_mbps", "upload_mbps", "monthly_price_cents") if k not in values]
    if missing:
        raise Invalid("Please fill in the required fields.", {k: "Required." for k in missing})
    _ensure_unique_code(values["code"])
    plan = Plan(currency=current_app.config["CURRENCY"], active=True, **values)
    db.session.add(plan)
    db.session.flush()
    audit.record("plan.create", plan, after=audit.snapshot(plan))
    invalidate_plan_caches()
    return plan


def update_plan(plan_id: int, **values) -> Plan:
    """Edit a plan; price changes apply to future bills only."""
    plan = get_plan(plan_id)
    values = _validate(values)
    if "code" in values:
        _ensure_unique_code(values["code"], plan.id)
    before = audit.snapshot(plan)
    for key, value in values.items():
        setattr(plan, key, value)
    db.session.flush()
    old, new = audit.changes(before, audit.snapshot(plan))
    if new:
        audit.record("plan.update", plan, before=old, after=new)
    invalidate_plan_caches()
    return plan


def set_plan_active(plan_id: int, active: bool) -> Plan:
    """Retire a plan (no new subscriptions) or bring it back."""
    plan = get_plan(plan_id)
    if plan.active != active:
        plan.active = active
        db.session.flush()
        audit.record("plan.reactivate" if active else "plan.retire", plan,
                     before={"active": not active}, after={"active": active})
        invalidate_plan_caches()
    return plan


def delete_plan(plan_id: int) -> None:
    """Delete a plan that was never used; a plan with subscriptions must be retired instead."""
    plan = get_plan(plan_id)
    if db.session.scalar(select(exists().where(Subscription.plan_id == plan.id))):
        raise BusinessRuleViolation("This plan has subscriptions, so it cannot be deleted. Retire it instead.")
    audit.record("plan.delete", plan, before=audit.snapshot(plan))
    db.session.delete(plan)
    db.session.flush()
    invalidate_plan_caches()


def list_plans_with_usage(page: int, per_page: int):
    """Return one page of plans, each with its count of live subscriptions and whether any ever used it."""
    live = (select(func.count()).where(Subscription.plan_id == Plan.id, Subscription.status != "cancelled")
            .correlate(Plan).scalar_subquery())
    # A plan with only cancelled subscriptions has no subscribers but cannot be deleted either.
    used = exists().where(Subscription.plan_id == Plan.id).correlate(Plan)
    stmt = (select(Plan, live.label("subscribers"), used.label("used"))
            .order_by(Plan.active.desc(), Plan.monthly_price_cents, Plan.id))
    total = db.session.scalar(select(func.count()).select_from(Plan))
    rows = db.session.execute(stmt.limit(per_page).offset((page - 1) * per_page)).all()
    return rows, total


def list_plans_page(page: int, page_size: int) -> tuple[list[Plan], int]:
    """Return one page of plans (active first, then by price) and the count of all plans."""
    stmt = select(Plan).order_by(Plan.active.desc(), Plan.monthly_price_cents, Plan.id)
    total = db.session.scalar(select(func.count()).select_from(Plan))
    return list(db.session.scalars(stmt.limit(page_size).offset((page - 1) * page_size))), total


def plan_choices(active_only: bool = True) -> list[tuple[int, str]]:
    """Return (id, label) pairs for plan pickers; cached, invalidated by every plan write."""
    key = f"{CHOICES_CACHE_KEY}:{int(active_only)}"
    choices = cache.get(key)
    if choices is None:
        stmt = select(Plan.id, Plan.name, Plan.code).order_by(Plan.name)
        if active_only:
            stmt = stmt.where(Plan.active)
        choices = [(row.id, f"{row.name} ({row.code})") for row in db.session.execute(stmt)]
        cache.set(key, choices, timeout=600)
    return choices


def invalidate_plan_caches() -> None:
    """Forget cached plan pickers and the dashboard."""
    from isp_admin.services.reporting.dashboard import invalidate_dashboard

    forget_now_and_after_commit(_forget_choices)
    invalidate_dashboard()


def _forget_choices() -> None:
    cache.delete_many(f"{CHOICES_CACHE_KEY}:0", f"{CHOICES_CACHE_KEY}:1")

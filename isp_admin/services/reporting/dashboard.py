"""The dashboard's figures, cached beside the function that invalidates them."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select

from isp_admin.extensions import cache, db
from isp_admin.models import Customer, JobRun, Plan, Subscription
from isp_admin.services.platform.after_commit import forget_now_and_after_commit

CACHE_KEY = "dashboard:summary"


@dataclass
class Summary:
    """Customers by status, active subscriptions by plan, and monthly recurring revenue."""

    customers_by_status: dict[str, int]
    plans: list[dict]
    mrr_cents: int
    active_subscriptions: int


def dashboard_summary() -> Summary:
    """Return the dashboard figures (cached for a minute; writes invalidate sooner)."""
    summary = cache.get(CACHE_KEY)
    if summary is None:
        summary = _compute()
        cache.set(CACHE_KEY, summary, timeout=60)
    return summary


@dataclass
class RunFailures:
    """The latest finished run, when it left customers out: its id, kind, date and how many customers."""

    run_id: int
    kind: str
    as_of: object
    failed_customers: int


def last_run_failures() -> RunFailures | None:
    """Return the latest finished top-level run if it left customers out, else None (never cached: one row)."""
    from isp_admin.services.platform.job_runs import failed_count

    run = db.session.scalar(select(JobRun).where(JobRun.parent_id.is_(None), JobRun.dry_run.is_(False),
                                                 JobRun.status != "running")
                            .order_by(JobRun.id.desc()).limit(1))
    if run is None or not failed_count(run):
        return None
    return RunFailures(run.id, run.kind, run.as_of, failed_count(run))


def invalidate_dashboard() -> None:
    """Forget the cached dashboard (and the reports built on the same figures); every write calls this."""
    from isp_admin.services.reporting.reports import invalidate_reports

    forget_now_and_after_commit(_forget_summary)
    invalidate_reports()


def _forget_summary() -> None:
    cache.delete(CACHE_KEY)


def _compute() -> Summary:
    by_status = dict(db.session.execute(select(Customer.status, func.count()).group_by(Customer.status)).all())
    price = func.coalesce(Subscription.price_override_cents, Plan.monthly_price_cents)
    rows = db.session.execute(
        # The plan's own flag gets its own name: labelled "active" it would collide with the count below.
        select(Plan.id, Plan.name, Plan.code, Plan.active.label("is_active"),
               func.count(Subscription.id).label("active"),
               func.coalesce(func.sum(case((Subscription.id.isnot(None), price), else_=0)), 0).label("mrr"))
        .outerjoin(Subscription, (Subscription.plan_id == Plan.id) & (Subscription.status == "active"))
        .group_by(Plan.id, Plan.name, Plan.code, Plan.active)
        .order_by(func.count(Subscription.id).desc(), Plan.name)
    ).mappings()
    plans = [dict(row) for row in rows]
    return Summary(
        customers_by_status={s: by_status.get(s, 0) for s in ("active", "suspended", "closed")},
        plans=plans,
        mrr_cents=sum(p["mrr"] for p in plans),
        active_subscriptions=sum(p["active"] for p in plans),
    )

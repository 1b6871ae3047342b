"""The staff's customer list, read three ways: a numbered page, the CSV export of all it matches, and the ids a
bulk action selects — one filter, so what the list shows is what gets exported or acted on.

Without a suspension reason the page is accounts.list_customers (its counts cached by data version); `reason`
(customers with a subscription suspended for that reason: with status=suspended, the dashboard's "suspended for
non-payment") adds a condition on their subscriptions, and pages the same way with a capped count.
"""
from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

from isp_admin.errors import Invalid
from isp_admin.extensions import db
from isp_admin.models import Customer, Plan, Subscription
from isp_admin.models.subscriptions import SUSPENSION_REASONS
from isp_admin.services.customers.accounts import SORTS, list_customers, search_condition, services_column
from isp_admin.services.platform import versions
from isp_admin.services.platform.pagination import COUNT_CAP, Page, keyset_page

DESCENDING = frozenset({"newest", "-name", "-account", "-status"})
EXPORT_BATCH = 500
REASONS = SUSPENSION_REASONS


def _check(sort: str, reason: str | None) -> None:
    if sort not in SORTS:
        raise Invalid("Unknown sort order.", {"sort": f"Choose one of {', '.join(SORTS)}."})
    if reason and reason not in REASONS:
        raise Invalid("Unknown suspension reason.", {"reason": f"One of {', '.join(REASONS)}."})


def customer_conditions(*, q: str = "", status: str | None = None, reason: str | None = None,
                        plan_id: int | None = None) -> list:
    """Return the SQL conditions of the customer list's search and filters.

    `status` is the customer's own (suspended once no subscription is active); `reason` keeps customers with a
    subscription suspended for that reason. The dashboard's "suspended for non-payment" is both together.
    """
    c, s = Customer.__table__.c, Subscription.__table__.c
    if q and "\x00" in q:
        raise Invalid("The search is not valid.", {"q": "Contains a NUL character."})
    conditions = []
    if q and q.strip():
        conditions.append(search_condition(q))
    if status:
        conditions.append(c.status == status)
    if reason:
        conditions.append(c.id.in_(select(s.customer_id).where(s.status == "suspended",
                                                                s.suspension_reason == reason)))
    if plan_id:
        conditions.append(c.id.in_(select(s.customer_id).where(s.plan_id == plan_id, s.status != "cancelled")))
    return conditions


def customer_page(*, q: str = "", status: str | None = None, reason: str | None = None, plan_id: int | None = None,
                  sort: str = "name", size: int = 50, offset: int = 0, after: str | None = None,
                  before: str | None = None) -> Page:
    """Return one page of the filtered customers with their live subscriptions, in a constant number of queries.

    With a suspension reason: the page (its subscriptions folded in on PostgreSQL) and a capped count.
    """
    _check(sort, reason)
    if not reason:
        return list_customers(q=q, status=status, plan_id=plan_id, sort=sort, size=size, offset=offset,
                              after=after, before=before, with_plan_choices=True)
    c = Customer.__table__.c
    conditions = customer_conditions(q=q, status=status, reason=reason, plan_id=plan_id)
    sort_key = SORTS[sort]
    columns = [c[name] for name in ("id", "account_number", "name", "email", "phone", "status")]
    folded = versions.enabled()  # PostgreSQL: the subscriptions come in the page query, as JSON (3 statements)
    stmt = select(*columns, *([services_column()] if folded else [])).where(*conditions)
    page = keyset_page(db.session, stmt, c[sort_key], c.id, descending=sort in DESCENDING, size=size, after=after,
                       before=before, sort_key=sort_key, offset=offset, as_rows=True)
    page.extra["services"] = ({row.id: row.services for row in page.rows} if folded
                              else _services([row.id for row in page.rows]))
    capped = select(c.id).where(*conditions).limit(COUNT_CAP + 1).subquery()
    total = db.session.scalar(select(func.count()).select_from(capped))
    page.total, page.total_capped = min(total, COUNT_CAP), total > COUNT_CAP
    return page


def _services(ids: list[int]) -> dict[int, list]:
    """The live subscriptions (plan name, status, login) of the customers on a page, in one query."""
    s, p = Subscription.__table__.c, Plan.__table__.c
    services: dict[int, list] = {i: [] for i in ids}
    if ids:
        for sub in db.session.execute(
                select(s.customer_id, s.status, s.pppoe_username, p.name.label("plan_name"))
                .join(Plan.__table__, p.id == s.plan_id)
                .where(s.customer_id.in_(ids), s.status != "cancelled").order_by(s.id)).mappings():
            services[sub["customer_id"]].append(sub)
    return services


def customer_ids(*, q: str = "", status: str | None = None, reason: str | None = None, plan_id: int | None = None,
                 only: list[int] | None = None, limit: int) -> list[int]:
    """Return the ids of the filtered customers (of `only`, when given), in id order, at most `limit`."""
    _check("name", reason)
    c = Customer.__table__.c
    conditions = customer_conditions(q=q, status=status, reason=reason, plan_id=plan_id)
    if only is not None:
        conditions.append(c.id.in_(only))
    return list(db.session.scalars(select(c.id).where(*conditions).order_by(c.id).limit(limit)))


CUSTOMER_CSV_HEADER = ["Account", "Name", "Email", "Phone", "Service address", "Billing address", "Tax id",
                       "Status", "Services", "Created at", "Customer id"]


def _services_text():
    """Each customer's live subscriptions as one text ("Plan (login, status); …"), aggregated in SQL."""
    s, p = Subscription.__table__.c, Plan.__table__.c
    item = p.name + " (" + func.coalesce(s.pppoe_username, "no login") + ", " + s.status + ")"
    if db.engine.dialect.name == "postgresql":
        joined = func.string_agg(item, aggregate_order_by(literal_column("'; '"), s.id))
    else:  # SQLite (make run): group_concat, in the order the rows come
        joined = func.group_concat(item, "; ")
    return (select(joined).select_from(Subscription.__table__.join(Plan.__table__, p.id == s.plan_id))
            .where(s.customer_id == Customer.__table__.c.id, s.status != "cancelled")
            .scalar_subquery().label("services"))


def customer_csv_rows(*, q: str = "", status: str | None = None, reason: str | None = None,
                      plan_id: int | None = None, sort: str = "name",
                      only: list[int] | None = None) -> Iterator[list]:
    """Yield every filtered customer (only the ids in `only`, when given) in the list's order, for CSV."""
    _check(sort, reason)
    c = Customer.__table__.c
    conditions = customer_conditions(q=q, status=status, reason=reason, plan_id=plan_id)
    if only is not None:
        conditions.append(c.id.in_(only))
    sort_col = c[SORTS[sort]]
    order = (sort_col.desc(), c.id.desc()) if sort in DESCENDING else (sort_col.asc(), c.id.asc())
    stmt = (select(c.id, c.account_number, c.name, c.email, c.phone, c.service_address, c.billing_address, c.tax_id,
                   c.status, _services_text(), c.created_at).where(*conditions).order_by(*order))
    return _stream(stmt)


def _stream(stmt) -> Iterator[list]:
    result = db.session.execute(stmt.execution_options(yield_per=EXPORT_BATCH))
    try:
        for r in result:
            yield [r.account_number, r.name, r.email, r.phone, r.service_address, r.billing_address, r.tax_id,
                   r.status, r.services, r.created_at, r.id]
    finally:
        result.close()  # a download abandoned half-way frees its cursor

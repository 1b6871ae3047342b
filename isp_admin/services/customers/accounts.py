"""Customers: create, update, close, look up, and the searchable list."""
from __future__ import annotations

import functools
import secrets

from sqlalchemy import String, any_, func, literal_column, or_, select, text, union
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.exc import IntegrityError

from isp_admin.database import escape_like
from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid, NotFound
from isp_admin.extensions import cache, db
from isp_admin.models import AuditEvent, Customer, Plan, Subscription
from isp_admin.services.identity.users import normalise_email
from isp_admin.services.platform import audit, versions
from isp_admin.services.platform.after_commit import forget_now_and_after_commit
from isp_admin.services.platform.pagination import COUNT_CAP, Page, decode_cursor, encode_cursor, keyset_page
from isp_admin.services.platform.sqljson import JsonField, row_json_sql
from isp_admin.services.reporting.dashboard import invalidate_dashboard

EDITABLE = ("name", "email", "phone", "service_address", "billing_address", "tax_id", "notes")
SORTS = {"name": "name", "-name": "name", "account": "account_number", "-account": "account_number",
         "newest": "id", "oldest": "id", "status": "status", "-status": "status"}
LIST_COLUMNS = ("id", "account_number", "name", "email", "phone", "service_address", "billing_address", "tax_id",
                "status", "notes", "created_at", "updated_at")
TOTAL_CACHE_KEY = "customers:total"


def _clean(values: dict) -> dict:
    unknown = set(values) - set(EDITABLE)
    if unknown:
        raise Invalid("Unknown fields.", {name: "Not a customer field." for name in sorted(unknown)})
    # PostgreSQL text cannot hold a NUL byte; refuse it here as a field error rather than fail the INSERT.
    with_nul = sorted(k for k, v in values.items() if isinstance(v, str) and "\x00" in v)
    if with_nul:
        raise Invalid("Remove the control characters.", {name: "Contains a NUL character." for name in with_nul})
    cleaned = {k: (v.strip() if isinstance(v, str) else v) or None for k, v in values.items()}
    if "name" in cleaned and not cleaned["name"]:
        raise Invalid("Enter the customer's name.", {"name": "Required."})
    if cleaned.get("email"):
        cleaned["email"] = normalise_email(cleaned["email"])
    return cleaned


def _new_account_number() -> str:
    return f"C{secrets.randbelow(10**8):08d}"


def get_customer(customer_id: int) -> Customer:
    """Return a customer by id or raise NotFound."""
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        raise NotFound("No such customer.")
    return customer


def create_customer(account_number: str | None = None, **values) -> Customer:
    """Create a customer with a fresh, unique account number (or the given one, brought from another system)."""
    cleaned = _clean(values)
    if not cleaned.get("name"):
        raise Invalid("Enter the customer's name.", {"name": "Required."})
    for _attempt in range(5):
        customer = Customer(account_number=account_number or _new_account_number(), status="active", **cleaned)
        try:
            with db.session.begin_nested():  # a collision on the random number retries, not fails
                db.session.add(customer)
                db.session.flush()
            break
        except IntegrityError:
            if account_number:
                raise Conflict("This account number is taken.", {"account_number": "Already taken."}) from None
            continue
    else:  # pragma: no cover - needs five collisions in a row
        raise BusinessRuleViolation("Could not allocate an account number; try again.")
    audit.record("customer.create", customer, after=audit.snapshot(customer), customer_id=customer.id)
    invalidate_customer_totals()
    invalidate_dashboard()  # customers by status
    return customer


def update_customer(customer_id: int, **values) -> Customer:
    """Update a customer's profile fields."""
    customer = get_customer(customer_id)
    cleaned = _clean(values)
    before = audit.snapshot(customer)
    for key, value in cleaned.items():
        setattr(customer, key, value)
    db.session.flush()
    old, new = audit.changes(before, audit.snapshot(customer))
    if new:
        audit.record("customer.update", customer, before=old, after=new, customer_id=customer.id)
    return customer


def close_customer(customer_id: int) -> Customer:
    """Close an account that has no live service and owes nothing; customers are closed, never deleted."""
    from isp_admin.models import Invoice
    from isp_admin.models.invoices import OPEN_STATUSES
    from isp_admin.services.billing.ledger import lock_customer

    customer = lock_customer(customer_id)
    if customer.status == "closed":
        raise BusinessRuleViolation("This customer's account is already closed.")
    live = db.session.scalar(select(func.count()).where(Subscription.customer_id == customer.id,
                                                        Subscription.status != "cancelled"))
    if live:
        raise BusinessRuleViolation(f"Cancel the customer's {live} live subscription(s) before closing the account.")
    owed = db.session.scalar(select(func.count()).where(Invoice.customer_id == customer.id,
                                                        Invoice.status.in_((*OPEN_STATUSES, "draft"))))
    if owed:
        raise BusinessRuleViolation("The customer has open or draft invoices; settle, void or delete them first.")
    before = customer.status
    customer.status = "closed"
    db.session.flush()
    audit.record("customer.close", customer, before={"status": before}, after={"status": "closed"},
                 customer_id=customer.id)
    invalidate_dashboard()
    return customer


def refresh_status(customer: Customer) -> None:
    """Derive an open customer's status from its subscriptions: suspended when none is active."""
    if customer.status == "closed":
        return
    rows = db.session.execute(
        select(Subscription.status, func.count()).where(Subscription.customer_id == customer.id)
        .group_by(Subscription.status)
    ).all()
    counts = dict(rows)
    status = "suspended" if counts.get("suspended") and not counts.get("active") else "active"
    if status != customer.status:
        before = customer.status
        customer.status = status
        audit.record("customer.status", customer, before={"status": before}, after={"status": status},
                     customer_id=customer.id)


def invalidate_customer_totals() -> None:
    """Forget the cached customer count; every create or bulk load calls this."""
    forget_now_and_after_commit(_forget_total)


def _forget_total() -> None:
    cache.delete(TOTAL_CACHE_KEY)


def _total_customers() -> int:
    total = cache.get(TOTAL_CACHE_KEY)
    if total is None:
        total = db.session.scalar(select(func.count()).select_from(Customer))
        cache.set(TOTAL_CACHE_KEY, total, timeout=600)
    return total



def search_condition(q: str):
    """Return a condition matching name, account, email, phone, PPPoE login or IP containing `q`."""
    needle = escape_like(q.strip().lower())
    pattern = f"%{needle}%"
    c, s = Customer.__table__.c, Subscription.__table__.c
    services = or_(s.pppoe_username.ilike(pattern, escape="\\"), s.static_ip.ilike(pattern, escape="\\"))
    if versions.enabled():
        # PostgreSQL: the matching ids are collected once, in an init plan, by the two trigram indexes (a UNION of
        # two bitmap scans), and the page then fetches its rows by id. An IN (UNION …) let the planner hash-join
        # the whole table (70–130 ms at 100,000 customers); an OR on customers let it walk the name index through
        # every row for a rare term it thought common. This plan does neither, whatever the statistics say.
        matching = union(select(c.id).where(c.search_text.like(pattern, escape="\\")),
                         select(s.customer_id).where(services))
        return c.id == any_(func.array(matching.scalar_subquery()))
    # SQLite: a UNION of the two sides (customers.search_text is already lower-cased, so plain LIKE suffices).
    matching = union(
        select(c.id).where(c.search_text.like(pattern, escape="\\")),
        select(s.customer_id).where(services),
    )
    return c.id.in_(matching)


def _conditions(q: str, status: str | None, plan_id: int | None, created_from, created_to) -> list:
    c, s = Customer.__table__.c, Subscription.__table__.c
    if q and "\x00" in q:
        raise Invalid("The search is not valid.", {"q": "Contains a NUL character."})
    conditions = []
    if q and q.strip():
        conditions.append(search_condition(q))
    if status:
        conditions.append(c.status == status)
    if plan_id:
        conditions.append(c.id.in_(select(s.customer_id).where(s.plan_id == plan_id, s.status != "cancelled")))
    if created_from is not None:
        conditions.append(c.created_at >= created_from)
    if created_to is not None:
        conditions.append(c.created_at < created_to)
    return conditions


def services_column():
    """A column with each listed customer's live subscriptions as JSON (PostgreSQL), instead of a second query."""
    s, p = Subscription.__table__.c, Plan.__table__.c
    item = func.json_build_object("status", s.status, "pppoe_username", s.pppoe_username, "plan_name", p.name)
    return (select(func.coalesce(func.json_agg(aggregate_order_by(item, s.id)), text("'[]'::json")))
            .select_from(Subscription.__table__.join(Plan.__table__, p.id == s.plan_id))
            .where(s.customer_id == Customer.__table__.c.id, s.status != "cancelled")
            .scalar_subquery().label("services"))


def _count_expression(conditions: list):
    c = Customer.__table__.c
    if not conditions:
        return select(func.count()).select_from(Customer.__table__).scalar_subquery()
    # A filtered count stops at the cap: "10,000+" is honest and never scans the whole table.
    capped = select(c.id).where(*conditions).limit(COUNT_CAP + 1).subquery()
    return select(func.count()).select_from(capped).scalar_subquery()


def _set_total(page: Page, total: int, filtered: bool) -> None:
    if filtered:
        page.total, page.total_capped = min(total, COUNT_CAP), total > COUNT_CAP
    else:
        page.total = total


def _signature(q, status, plan_id, created_from, created_to) -> tuple:
    return ((q or "").strip().lower(), status, plan_id, created_from, created_to)


def list_customers(*, q: str = "", status: str | None = None, plan_id: int | None = None,
                   sort: str = "name", size: int = 50, after: str | None = None,
                   before: str | None = None, offset: int = 0, created_from=None, created_to=None,
                   with_services: bool = True, with_plan_choices: bool = False) -> Page:
    """Return one page of customers (with their live subscriptions), in a constant number of queries.

    On PostgreSQL the subscriptions come in the page query, and the count (with the plan choices, when asked
    for) is one more query only when the data changed since it was last counted: two queries at most.
    """
    c, s, p = Customer.__table__.c, Subscription.__table__.c, Plan.__table__.c
    if sort not in SORTS:
        raise Invalid("Unknown sort order.", {"sort": f"Choose one of {', '.join(SORTS)}."})
    conditions = _conditions(q, status, plan_id, created_from, created_to)
    fast = versions.enabled()
    columns = [c[name] for name in LIST_COLUMNS]
    if with_services and fast:
        columns.append(services_column())
    stmt = select(*columns).where(*conditions)
    sort_key = SORTS[sort]
    descending = sort in ("newest", "-name", "-account", "-status")
    page = keyset_page(db.session, stmt, c[sort_key], c.id, descending=descending,
                       size=size, after=after, before=before, sort_key=sort_key, offset=offset, as_rows=True)
    ids = [row.id for row in page.rows]
    services: dict[int, list] = {i: [] for i in ids}
    if with_services and fast:
        services = {row.id: row.services for row in page.rows}
    elif ids and with_services:
        subs = db.session.execute(
            select(s.customer_id, s.status, s.pppoe_username, p.name.label("plan_name"))
            .join(Plan.__table__, p.id == s.plan_id)
            .where(s.customer_id.in_(ids), s.status != "cancelled").order_by(s.id)
        ).mappings()
        for sub in subs:
            services[sub["customer_id"]].append(sub)
    page.extra["services"] = services
    signature = _signature(q, status, plan_id, created_from, created_to)
    if fast:
        key = versions.key("customers", "subscriptions", "plans")
        wanted = ("total", "plans") if with_plan_choices else ("total",)
        cached = versions.cache.get_or_compute(
            key and ("customers.list", signature, wanted, *key), lambda: _furniture(conditions, wanted))
        _set_total(page, cached["total"], bool(conditions))
        if with_plan_choices:
            page.extra["plan_choices"] = cached["plans"]
    elif conditions:
        capped = stmt.with_only_columns(c.id).limit(COUNT_CAP + 1).subquery()
        _set_total(page, db.session.scalar(select(func.count()).select_from(capped)), True)
    else:
        page.total = _total_customers()
    return page


def _furniture(conditions: list, wanted: tuple) -> dict:
    """Count the list (and read the plan choices) in one statement: what a page shows besides its rows."""
    p = Plan.__table__.c
    columns = [_count_expression(conditions).label("total")]
    if "plans" in wanted:
        choices = (select(func.coalesce(func.json_agg(aggregate_order_by(
            func.json_build_array(p.id, p.name.op("||")(" (").op("||")(p.code).op("||")(")")), p.name)),
            text("'[]'::json"))).scalar_subquery())
        columns.append(choices.label("plans"))
    row = db.session.execute(select(*columns)).one()
    found = {"total": row.total}
    if "plans" in wanted:
        found["plans"] = [(plan_id, label) for plan_id, label in row.plans]
    return found


# Page anchors: every step-th (sort value, id) of an unfiltered or status-filtered ordering, so page N starts from
# the nearest anchor and skips fewer than `step` rows, rather than OFFSET-ing through everything before it.
ANCHORS_PER_LIST = 2000
MIN_ANCHOR_STEP = 50


def _anchors(status: str | None, sort_key: str, descending: bool) -> dict:
    c = Customer.__table__.c
    sort_col = c[sort_key]
    where = [c.status == status] if status else []
    order = (sort_col.desc(), c.id.desc()) if descending else (sort_col.asc(), c.id.asc())
    # The count apart from the ranking: a count(*) OVER () would hold every row in memory and sort them, where
    # row_number() alone walks the (sort, id) index in order.
    counted = select(func.count().label("total")).select_from(Customer.__table__).where(*where).cte("counted")
    ranked = (select(sort_col.label("v"), c.id.label("id"), (func.row_number().over(order_by=order) - 1).label("rn"))
              .where(*where).subquery())
    step = func.greatest(MIN_ANCHOR_STEP, counted.c.total // ANCHORS_PER_LIST)
    row = db.session.execute(
        select(func.max(counted.c.total).label("total"), func.max(step).label("step"),
               func.json_agg(aggregate_order_by(func.json_build_array(ranked.c.v, ranked.c.id), ranked.c.rn))
               .label("anchors"))
        .select_from(ranked.join(counted, text("true")))
        .where(ranked.c.rn % step == 0)).one()
    return {"total": row.total or 0, "step": row.step or MIN_ANCHOR_STEP, "anchors": row.anchors or []}


@functools.cache  # built once per field list: the statement cache then keys on the one string
def _row_json_sql(fields: tuple[JsonField, ...]) -> str:
    return row_json_sql(Customer.__table__.c, fields)


@functools.cache
def _json_page_sql(row_json: str, sort_key: str, ascending: bool, status: bool, position: str | None,
                   backwards: bool) -> str:
    order = "ASC" if ascending else "DESC"
    where = ["c.status = %(status)s"] if status else []
    if position:  # a cursor starts after its row; an anchor is the page's first row (or OFFSET rows before it)
        compare = {("cursor", True): ">", ("cursor", False): "<", ("anchor", True): ">=", ("anchor", False): "<="}
        where.append(f"(c.{sort_key}, c.id) {compare[position, ascending]} (%(value)s, %(row_id)s)")
    # Only our own names go into the text (sort_key is a SORTS value; row_json holds column names and keys
    # checked to be identifiers); values are bound parameters.
    inner = (f"SELECT c.id, c.{sort_key} AS sort_value FROM customers c "  # noqa: S608
             f"{'WHERE ' + ' AND '.join(where) if where else ''} "
             f"ORDER BY c.{sort_key} {order}, c.id {order} LIMIT %(limit)s OFFSET %(offset)s")
    # One row for the whole page: its rows' JSON joined in page order (reversed for a Previous page), and the
    # (sort value, id) of each in query order for the cursors. Fetching 51 rows cost more CPU in the driver and
    # SQLAlchemy than PostgreSQL spends on the page.
    shown = "DESC" if backwards else "ASC"
    return (f"SELECT count(*) AS n, array_agg(page.sort_value ORDER BY page.rn) AS sort_values, "  # noqa: S608
            f"array_agg(page.id ORDER BY page.rn) AS ids, "
            f"string_agg(({row_json})::text, ',' ORDER BY page.rn {shown}) FILTER (WHERE page.rn <= %(size)s) "
            f"AS json FROM (SELECT found.id, found.sort_value, row_number() OVER (ORDER BY found.sort_value "
            f"{order}, found.id {order}) AS rn FROM ({inner}) AS found) AS page "
            f"JOIN customers ON customers.id = page.id")


def _json_page(row_json: str, *, status, sort_key, descending, size, after, before, offset, skip, start,
               total) -> Page:
    """The unfiltered (or status-filtered) API page as one statement written as text, run by the driver.

    The same keyset rules as pagination.keyset_page, without building and cache-keying a select on every request
    (that cost more CPU than PostgreSQL spends on the page). The page's JSON is in `page.extra["json"]`.
    """
    backwards = before is not None
    cursor = before if backwards else after
    ascending = descending == backwards
    params = {"status": status, "limit": size + 1, "offset": 0 if cursor else skip, "size": size}
    position = None
    if cursor:
        params["value"], params["row_id"] = decode_cursor(cursor, Customer.__table__.c[sort_key].type.python_type)
        position = "cursor"
    elif start is not None:
        params["value"], params["row_id"] = start
        position = "anchor"
    sql = _json_page_sql(row_json, sort_key, ascending, bool(status), position, backwards)
    found, values, ids, joined = db.session.connection().exec_driver_sql(sql, params).one()
    more = found > size
    keys = list(zip(values or (), ids or (), strict=True))[:size]
    if backwards:
        keys.reverse()
    has_next = more if not backwards else True
    has_prev = more if backwards else (cursor is not None or offset > 0)
    page = Page(rows=[{"sort_value": value, "id": row_id} for value, row_id in keys],
                next_cursor=encode_cursor(*keys[-1]) if keys and has_next else None,
                prev_cursor=encode_cursor(*keys[0]) if keys and has_prev else None, extra={"json": joined or ""})
    _set_total(page, total, bool(status))
    return page


def list_customers_json(fields: tuple[JsonField, ...], *, q: str = "", status: str | None = None,
                        plan_id: int | None = None, sort: str = "name", size: int = 50, after: str | None = None,
                        before: str | None = None, offset: int = 0, created_from=None, created_to=None) -> Page:
    """Return one page of customers as JSON made by PostgreSQL (`page.extra["json"]`: the rows' JSON objects
    joined by commas), for the API (PostgreSQL only).

    `fields` names the columns each row's JSON holds, under which keys (the API's schema, described).

    Unfiltered or status-filtered lists jump to any page from a cached anchor: the cost of page 2,000 is that of
    page 1. Queries: the page, plus the count (and anchors) when the customers changed since last counted.
    """
    c = Customer.__table__.c
    if sort not in SORTS:
        raise Invalid("Unknown sort order.", {"sort": f"Choose one of {', '.join(SORTS)}."})
    row_json = _row_json_sql(fields)
    conditions = _conditions(q, status, plan_id, created_from, created_to)
    sort_key = SORTS[sort]
    descending = sort in ("newest", "-name", "-account", "-status")
    anchorable = not (q.strip() or plan_id or created_from or created_to)
    start, skip = None, offset
    if anchorable:
        key = versions.key("customers")
        stats = versions.cache.get_or_compute(key and ("customers.anchors", status, sort_key, descending, *key),
                                              lambda: _anchors(status, sort_key, descending))
        total = stats["total"]
        index = offset // stats["step"]
        if not (after or before) and 0 < index < len(stats["anchors"]):
            value, row_id = stats["anchors"][index]
            start, skip = (value, row_id), offset - index * stats["step"]
    else:
        key = versions.key("customers", "subscriptions")  # a plan filter or a search reads subscriptions too
        signature = _signature(q, status, plan_id, created_from, created_to)
        total = versions.cache.get_or_compute(
            key and ("customers.count", signature, *key),
            lambda: db.session.scalar(select(_count_expression(conditions))))
    if anchorable:
        return _json_page(row_json, status=status, sort_key=sort_key, descending=descending, size=size,
                          after=after, before=before, offset=offset, skip=skip, start=start, total=total)
    json_column = literal_column(row_json, String)
    # The page is found on (sort, id) alone (an index-only walk past the rows it skips), then joined back to its
    # customers for the JSON: PostgreSQL projects a row before OFFSET drops it, so JSON in the inner query would
    # be built for every skipped row too (a deep page cost 1.5 ms of database time; now a third of that).
    inner = select(*([c.id] + ([c[sort_key]] if sort_key != "id" else []))).where(*conditions)

    def with_json(found, ascending: bool):
        order = [found.c[sort_key], found.c.id] if sort_key != "id" else [found.c.id]
        return (select(found.c.id, *([found.c[sort_key]] if sort_key != "id" else []), json_column.label("json"))
                .select_from(found.join(Customer.__table__, c.id == found.c.id))
                .order_by(*(col.asc() if ascending else col.desc() for col in order)))

    page = keyset_page(db.session, inner, c[sort_key], c.id, descending=descending, size=size, after=after,
                       before=before, sort_key=sort_key, offset=skip, start_at=start, skipped=offset,
                       outer=with_json)
    page.extra["json"] = ",".join(row["json"] for row in page.rows)
    _set_total(page, total, bool(conditions))
    return page


def customer_history(customer_id: int, limit: int = 50) -> list[AuditEvent]:
    """Return the newest audit events about a customer and its subscriptions."""
    return list(db.session.scalars(
        select(AuditEvent).where(AuditEvent.customer_id == customer_id).order_by(AuditEvent.id.desc()).limit(limit)
    ))


def customer_subscriptions(customer_id: int) -> list[Subscription]:
    """Return all subscriptions of a customer with their plans loaded."""
    from sqlalchemy.orm import joinedload

    return list(db.session.scalars(
        select(Subscription).options(joinedload(Subscription.plan))
        .where(Subscription.customer_id == customer_id).order_by(Subscription.id)
    ))

"""Realistic, varied test data, inserted in bulk (set-based, not one ORM object per row).

With history months, the real billing run bills the new customers for past months and most invoices are
paid; the payments are worked out in memory exactly as the payment service would allocate them one by one
(oldest invoice first, settled, paid-up customers reactivated), then written in bulk.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from ipaddress import IPv4Address

from flask import current_app
from sqlalchemy import bindparam, func, insert, select, text, update

from isp_admin.errors import Invalid
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Customer, Invoice, Payment, PaymentAllocation, Plan, Subscription
from isp_admin.models.base import utcnow
from isp_admin.models.invoices import OPEN_STATUSES
from isp_admin.services.billing import collections
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.calendar import bill_date_on_or_before, next_bill_date_after
from isp_admin.services.billing.ledger import reactivate_subscription
from isp_admin.services.billing.payments import fingerprint
from isp_admin.services.customers.accounts import invalidate_customer_totals, refresh_status
from isp_admin.services.messaging.notifications import queue_many
from isp_admin.services.platform import audit
from isp_admin.services.platform.bulk import bulk_insert, is_postgres, reserve_ids
from isp_admin.services.platform.clock import today
from isp_admin.services.reporting.dashboard import invalidate_dashboard
from isp_admin.services.reporting.reports import invalidate_reports

FIRST = [
    "Amina", "James", "Wanjiru", "Carlos", "Mei", "Olu", "Sofia", "Liam", "Priya", "Kofi", "Elena", "Noah",
    "Fatima", "Diego", "Hana", "Tariq", "Grace", "Mateo", "Zara", "Ibrahim", "Chloe", "Ravi", "Nia", "Lucas",
    "Yuki", "Omar", "Isla", "Kwame", "Ana", "Felix",
]
LAST = [
    "Otieno", "Smith", "Mwangi", "Garcia", "Chen", "Adeyemi", "Rossi", "Murphy", "Patel", "Mensah", "Ivanova",
    "Kim", "Hassan", "Lopez", "Sato", "Khan", "Njoroge", "Silva", "Ali", "Okafor", "Dubois", "Sharma", "Achieng",
    "Martin", "Tanaka", "Haddad", "Walsh", "Boateng", "Costa", "Weber",
]
STREETS = [
    "Moi Avenue", "Baker Street", "Harbour Road", "Station Lane", "Kenyatta Road", "Riverside Drive",
    "Market Street", "Hill View", "Church Road", "Lakeshore Blvd",
]
CITIES = ["Nairobi", "Mombasa", "Kisumu", "Lagos", "Accra", "Lisbon", "Leeds", "Austin", "Pune", "Cape Town"]
BUSINESS = ["Bakery", "Clinic", "Hardware", "Pharmacy", "Hotel", "Garage", "Cafe", "Salon", "Academy", "Logistics"]
PLANS = [  # code, name, down, up, cap GB, price cents, setup cents, tax bp
    ("HOME-10", "Home 10", 10, 2, 200, 1900, 2500, 1600),
    ("HOME-25", "Home 25", 25, 5, None, 2900, 2500, 1600),
    ("HOME-50", "Home 50", 50, 10, None, 3900, 2500, 1600),
    ("FIBER-100", "Fiber 100", 100, 50, None, 5500, 0, 1600),
    ("FIBER-300", "Fiber 300", 300, 150, None, 7900, 0, 1600),
    ("FIBER-1G", "Fiber 1 Gbps", 1000, 500, None, 12900, 0, 1600),
    ("BIZ-100", "Business 100", 100, 100, None, 14900, 5000, 1600),
    ("LEGACY-8", "Legacy DSL 8", 8, 1, 100, 1500, 0, 1600),
]
BATCH = 5000
MAX_HISTORY_MONTHS = 12
PAY_METHODS = ("mobile_money", "bank_transfer", "card", "cash")


@dataclass
class Generated:
    """What a generation run loaded, and how long it took (history_seconds: the billing history's part)."""

    customers: int
    subscriptions: int
    seconds: float
    invoices: int = 0
    payments: int = 0
    history_seconds: float = 0.0


def ensure_plans() -> list[dict]:
    """Create the demo plans that are missing and return every plan's id, price and active flag."""
    currency = current_app.config["CURRENCY"]
    existing = set(db.session.scalars(select(Plan.code)))
    now = datetime.now(UTC)
    rows = [dict(code=code, name=name, download_mbps=d, upload_mbps=u, data_cap_gb=cap, monthly_price_cents=price,
                 setup_fee_cents=setup, tax_rate_bp=tax, currency=currency, active=code != "LEGACY-8",
                 created_at=now, updated_at=now)
            for code, name, d, u, cap, price, setup, tax in PLANS if code not in existing]
    if rows:
        db.session.execute(insert(Plan), rows)
    return [dict(r._mapping) for r in db.session.execute(select(Plan.id, Plan.active, Plan.monthly_price_cents))]


def _free(candidates: list[str], column) -> set[str]:
    taken = set(db.session.scalars(select(column).where(column.in_(candidates))))
    return {c for c in candidates if c not in taken}


def _taken_logins(logins: list[str]) -> set[str]:
    """Those of `logins` (lower-cased) a live subscription holds already, in whatever case it was typed."""
    stored = func.lower(Subscription.pppoe_username)
    return set(db.session.scalars(select(stored).where(stored.in_([x.lower() for x in logins]),
                                                       Subscription.status != "cancelled"))) if logins else set()


def generate(count: int, seed: int | None = None, progress: Callable[[int], None] | None = None,
             history_months: int = 0) -> Generated:
    """Insert `count` customers with subscriptions in every state, then `history_months` billed; return counts."""
    if not 0 <= history_months <= MAX_HISTORY_MONTHS:
        raise Invalid("Too much billing history.", {"history_months": f"From 0 to {MAX_HISTORY_MONTHS} months."})
    started = time.perf_counter()
    rng = random.Random(seed)
    plans = ensure_plans()
    active_plans = [p for p in plans if p["active"]] or plans
    retired = [p for p in plans if not p["active"]]
    day = today()
    billed_from = _history_start(day, history_months) if history_months else None
    now = datetime.now(UTC)
    ip_pool = iter(rng.sample(range(1, 2**22 - 1), min(2**22 - 2, max(count // 5, 10))))
    total_subs, span = 0, []
    for offset in range(0, count, BATCH):
        n = min(BATCH, count - offset)
        numbers: list[str] = []
        while len(numbers) < n:  # draw again until enough numbers are unused (earlier runs, same seed)
            candidates = [f"C{x:08d}" for x in rng.sample(range(10**8), 2 * (n - len(numbers)))]
            free = _free(candidates, Customer.account_number) - set(numbers)
            numbers += [x for x in candidates if x in free][: n - len(numbers)]
        ids = reserve_ids(Customer.__table__, len(numbers))
        span += (min(ids), max(ids))
        customers, subs = [], []
        for customer_id, number in zip(ids, numbers, strict=True):
            row = _customer(rng, customer_id, number, now)
            kinds = ["cancelled"] if rng.random() < 0.08 else ["live"] + (["live"] if rng.random() < 0.15 else [])
            states = []
            for index, kind in enumerate(kinds, 1):
                sub = _subscription(rng, customer_id, row, kind, index, active_plans, retired, day, ip_pool,
                                    billed_from)
                subs.append(sub)
                states.append(sub["status"])
            # The customer's status follows its subscriptions, as refresh_status would set it.
            if "active" in states or "pending" in states:
                row["status"] = "active"
            else:
                row["status"] = "suspended" if "suspended" in states else "closed"
            customers.append(row)
        ips = [s["static_ip"] for s in subs if s["static_ip"]]
        free_ips = _free(ips, Subscription.static_ip) if ips else set()
        for s in subs:
            if s["static_ip"] and s["static_ip"] not in free_ips:
                s["static_ip"] = None
        # A login typed by staff may already hold a generated one in another case ("C00012345-1"): the same login.
        taken = _taken_logins([s["pppoe_username"] for s in subs if s["pppoe_username"]])
        for s in subs:
            if s["pppoe_username"] and s["pppoe_username"].lower() in taken:
                s["pppoe_username"] = None
        bulk_insert(Customer.__table__, customers)
        bulk_insert(Subscription.__table__, subs)
        # Suspended before the first bill here: the record coverage and a later reactivation go by.
        db.session.execute(text(
            "INSERT INTO suspension_periods (subscription_id, customer_id, reason, started_on) "
            "SELECT id, customer_id, suspension_reason, CASE WHEN next_bill_date < :day THEN next_bill_date "
            "ELSE :day END FROM subscriptions WHERE status = 'suspended' AND customer_id BETWEEN :first AND :last"),
            {"day": day, "first": min(ids), "last": max(ids)})
        total_subs += len(subs)
        if progress:
            progress(n)
    loaded = time.perf_counter()
    invoices = payments = 0
    if history_months and span:
        invoices, payments = _load_history((min(span), max(span)), history_months, day, rng)
    invalidate_customer_totals()
    invalidate_dashboard()
    invalidate_reports()
    done = time.perf_counter()
    return Generated(count, total_subs, done - started, invoices, payments, done - loaded if history_months else 0.0)


def _customer(rng, customer_id: int, number: str, now: datetime) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    business = rng.random() < 0.12
    created = now - timedelta(days=rng.randint(0, 1100), seconds=rng.randint(0, 86399))
    return dict(
        id=customer_id, account_number=number,
        name=f"{last} {rng.choice(BUSINESS)}" if business else f"{first} {last}",
        email=f"{first}.{last}.{number[1:]}@example.net".lower() if rng.random() < 0.93 else None,
        phone=f"+254 7{rng.randint(10, 99)} {rng.randint(100, 999)} {rng.randint(100, 999)}",
        service_address=f"{rng.randint(1, 999)} {rng.choice(STREETS)}, {rng.choice(CITIES)}",
        billing_address=None if rng.random() < 0.8 else f"PO Box {number[-5:]}",
        tax_id=f"P{rng.randint(10**8, 10**9 - 1)}X" if business else None,
        status="active", notes=None, created_at=created, updated_at=created,
    )


def _subscription(rng, customer_id, customer, kind, number, active_plans, retired, day, ip_pool,
                  billed_from) -> dict:
    plan = rng.choice(retired) if retired and rng.random() < 0.03 else rng.choice(active_plans)
    start = customer["created_at"].date() + timedelta(days=rng.randint(0, 10))
    roll = rng.random()
    status, reason, end = "active", None, None
    if kind == "cancelled":
        status, end = "cancelled", start + timedelta(days=rng.randint(30, 400))
    elif roll < 0.04:
        status, start = "pending", day + timedelta(days=rng.randint(1, 30))
    elif roll < 0.13:
        status, reason = "suspended", rng.choice(("non_payment", "non_payment", "manual", "vacation"))
    # Billing days cluster on the 1st, with every day of the month represented (29–31 included).
    billing_day = 1 if rng.random() < 0.3 else rng.randint(1, 31)
    next_bill = start if status == "pending" else next_bill_date_after(max(start, day), billing_day)
    if billed_from and status in ("active", "suspended"):
        # Due since billed_from, as the demo's bill_history moves them back (here at insert, not a second write).
        next_bill = max(bill_date_on_or_before(billed_from, billing_day), billed_from - timedelta(days=27))
        start = min(start, next_bill)
    if end and end < start:
        end = start
    ip = None
    if status != "cancelled" and rng.random() < 0.15:
        ip = str(IPv4Address(int(IPv4Address("100.64.0.0")) + next(ip_pool, 0)))
    created = customer["created_at"]
    return dict(
        customer_id=customer_id, plan_id=plan["id"], status=status, suspension_reason=reason,
        start_date=start, end_date=end, billing_day=billing_day, next_bill_date=next_bill, billed_from=next_bill,
        price_override_cents=plan["monthly_price_cents"] - 500 if rng.random() < 0.05 and
        plan["monthly_price_cents"] >= 500 else None,
        pppoe_username=f"{customer['account_number'].lower()}-{number}" if status != "cancelled"
        else None,
        static_ip=ip if ip and ip != "100.64.0.0" else None,
        cpe_mac=":".join(f"{rng.randint(0, 255):02X}" for _ in range(6)),
        created_at=created, updated_at=created,
    )


# --- billing history --------------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Bill:
    id: int
    due: date
    total: int
    paid: int = 0
    status: str = "open"


def _history_start(day: date, months: int) -> date:
    return day - timedelta(days=30 * months + 2)  # the demo's bill_history: 62 days back for its two months


def _load_history(customers: tuple[int, int], months: int, day: date, rng: random.Random) -> tuple[int, int]:
    """Bill an id range of customers due since _history_start for past months, pay ~80%; return the counts."""
    chunk = current_app.config["BILLING_CHUNK_SIZE"]
    s = Subscription.__table__.c
    book = _Book(day, set(db.session.scalars(select(s.customer_id).where(
        s.customer_id.between(*customers), s.status == "suspended", s.suspension_reason == "non_payment"))))
    invoices = 0
    # Payments are written after the last run, not month by month: the run's credit check (write_invoices) costs
    # two queries per customer that has payments, and with every payment fully allocated it would find nothing.
    for as_of in [day - timedelta(days=15 + 30 * back) for back in reversed(range(months))]:
        due = [c for c in billing.customers_due(as_of) if customers[0] <= c <= customers[1]]
        for first_last in billing.chunk_ranges(due, chunk):
            invoices += billing.bill_customer_range(as_of, first_last)["invoices"]
        i = Invoice.__table__.c
        for row in db.session.execute(select(i.id, i.customer_id, i.due_date, i.total_cents).where(
                i.issue_date == as_of, i.customer_id.between(*customers), i.status == "open").order_by(i.id)):
            book.issue(row.customer_id, _Bill(row.id, row.due_date, row.total_cents))
            if rng.random() < 0.8:  # most customers pay, a few days after the invoice, as the demo's do
                received = min(day, as_of + timedelta(days=rng.randint(1, 12)))
                book.pay(row.customer_id, row.total_cents, rng.choice(PAY_METHODS), received, f"DEMO-{row.id}")
        _reactivate(book.paid_up, day)  # before the next run, which would bill a reactivated subscription
        book.paid_up = []
    book.write()
    collections.run_mark_overdue(day)
    return invoices, len(book.payments)


class _Book:
    """Payments allocated in memory as record_payment would, one at a time; written in bulk by write()."""

    def __init__(self, day: date, suspended: set[int]):
        self.day, self.suspended = day, suspended  # suspended: customers with a non-payment suspension
        self.bills: dict[int, list[_Bill]] = {}
        self.payments: list[dict] = []
        self.allocations: list[tuple[int, int, int]] = []  # payment index, invoice id, cents
        self.events: list[tuple[int, int, str, str]] = []  # invoice id, customer id, status before, after
        self.touched: dict[int, _Bill] = {}
        self.paid_up: list[int] = []  # suspended customers whose payment left nothing overdue: reactivated

    def issue(self, customer_id: int, bill: _Bill) -> None:
        """Add a newly issued invoice to the customer's open invoices (due dates only grow, so oldest first)."""
        self.bills.setdefault(customer_id, []).append(bill)

    def pay(self, customer_id: int, amount: int, method: str, received_on: date, reference: str) -> None:
        """Record a payment: oldest invoice first, each settled (ledger.allocate_payment), then reactivation."""
        index = len(self.payments)
        self.payments.append(dict(customer_id=customer_id, amount_cents=amount, method=method, reference=reference,
                                  received_on=received_on))
        bills = self.bills[customer_id]
        for bill in bills:
            if amount <= 0:
                break
            take = min(amount, bill.total - bill.paid)
            if take <= 0 or bill.status not in OPEN_STATUSES:
                continue
            self.allocations.append((index, bill.id, take))
            bill.paid += take
            amount -= take
            before = bill.status
            bill.status = "paid" if bill.paid == bill.total else "overdue" if self.day > bill.due else "open"
            if bill.status != before:
                self.events.append((bill.id, customer_id, before, bill.status))
            self.touched[bill.id] = bill
        self.bills[customer_id] = bills = [b for b in bills if b.status in OPEN_STATUSES]
        if customer_id in self.suspended and not any(b.due < self.day for b in bills):
            self.suspended.discard(customer_id)
            self.paid_up.append(customer_id)

    def write(self) -> None:
        """Insert the payments, allocations and audit events, and update the invoices, in bulk."""
        now, actor, currency = utcnow(), audit.current_actor(), current_app.config["CURRENCY"]
        ids = reserve_ids(Payment.__table__, len(self.payments))
        events = []
        for payment_id, p in zip(ids, self.payments, strict=True):
            request = {**p, "invoice_id": None}
            p.update(id=payment_id, currency=currency, request_fingerprint=fingerprint(request), status="completed",
                     recorded_by=actor.label, created_at=now)
            events.append(_event(now, actor, "payment.record", "payments", payment_id, p["customer_id"], None, {
                "amount_cents": p["amount_cents"], "method": p["method"], "reference": p["reference"],
                "invoice_id": None}))
        events += [_event(now, actor, f"invoice.{after}", "invoices", invoice_id, customer_id, {"status": before},
                          {"status": after}) for invoice_id, customer_id, before, after in self.events]
        bulk_insert(Payment.__table__, self.payments)
        bulk_insert(PaymentAllocation.__table__, [dict(payment_id=ids[index], invoice_id=invoice_id,
                                                       amount_cents=cents, created_at=now)
                                                  for index, invoice_id, cents in self.allocations])
        bulk_insert(AuditEvent.__table__, events, json_columns=("before", "after"))
        _update_invoices(list(self.touched.values()), now)


def _event(now, actor, action, entity_type, entity_id, customer_id, before, after) -> dict:
    return dict(at=now, actor_type=actor.type, actor_id=actor.id, actor_label=actor.label, action=action,
                entity_type=entity_type, entity_id=entity_id, customer_id=customer_id, before=before, after=after,
                ip=actor.ip)


def _reactivate(customer_ids: list[int], day: date) -> None:
    """Do what ledger.reactivate_if_paid does for paid-up customers (its check would read unwritten payments)."""
    if not customer_ids:
        return
    for sub in db.session.scalars(select(Subscription).where(
            Subscription.customer_id.in_(customer_ids), Subscription.status == "suspended",
            Subscription.suspension_reason == "non_payment")):
        reactivate_subscription(sub, day)
    # With a subscription active again, refresh_status can only change a suspended customer.
    for customer in db.session.scalars(select(Customer).where(Customer.id.in_(customer_ids),
                                                              Customer.status == "suspended")):
        refresh_status(customer)
    queue_many([dict(customer_id=c, invoice_id=None, kind="reactivation", recipient=None,
                     subject="Your service has been restored") for c in customer_ids])
    db.session.flush()


def _update_invoices(bills: list[_Bill], now: datetime) -> None:
    """Set amount paid, status and paid_at of many invoices in one statement (unnest on PostgreSQL)."""
    if not bills:
        return
    if is_postgres():
        db.session.execute(text(
            "UPDATE invoices AS i SET amount_paid_cents = v.paid, status = v.status, updated_at = :now, "
            "paid_at = CASE WHEN v.status = 'paid' THEN :now END FROM unnest(CAST(:ids AS bigint[]), "
            "CAST(:paid AS bigint[]), CAST(:statuses AS text[])) AS v(id, paid, status) WHERE i.id = v.id"),
            {"ids": [b.id for b in bills], "paid": [b.paid for b in bills], "statuses": [b.status for b in bills],
             "now": now})
        return
    table = Invoice.__table__
    db.session.execute(
        update(table).where(table.c.id == bindparam("bill_id")).values(
            amount_paid_cents=bindparam("paid"), status=bindparam("new_status"), paid_at=bindparam("paid_on"),
            updated_at=now),
        [{"bill_id": b.id, "paid": b.paid, "new_status": b.status, "paid_on": now if b.status == "paid" else None}
         for b in bills])

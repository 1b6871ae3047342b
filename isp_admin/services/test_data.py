"""Realistic, varied test data, inserted in bulk (set-based, not one ORM object per row)."""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address

from flask import current_app
from sqlalchemy import insert, select

from isp_admin.extensions import db
from isp_admin.models import Customer, Plan, Subscription
from isp_admin.services.bulk import bulk_insert, reserve_ids
from isp_admin.services.calendar import next_bill_date_after
from isp_admin.services.clock import today
from isp_admin.services.customers import invalidate_customer_totals
from isp_admin.services.dashboard import invalidate_dashboard

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


@dataclass
class Generated:
    """What a generation run loaded, and how long it took."""

    customers: int
    subscriptions: int
    seconds: float


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


def generate(count: int, seed: int | None = None, progress: Callable[[int], None] | None = None) -> Generated:
    """Insert `count` customers with subscriptions in every state; return what was loaded."""
    started = time.perf_counter()
    rng = random.Random(seed)
    plans = ensure_plans()
    active_plans = [p for p in plans if p["active"]] or plans
    retired = [p for p in plans if not p["active"]]
    day = today()
    now = datetime.now(UTC)
    ip_pool = iter(rng.sample(range(1, 2**22 - 1), min(2**22 - 2, max(count // 5, 10))))
    total_subs = 0
    for offset in range(0, count, BATCH):
        n = min(BATCH, count - offset)
        numbers: list[str] = []
        while len(numbers) < n:  # draw again until enough numbers are unused (earlier runs, same seed)
            candidates = [f"C{x:08d}" for x in rng.sample(range(10**8), 2 * (n - len(numbers)))]
            free = _free(candidates, Customer.account_number) - set(numbers)
            numbers += [x for x in candidates if x in free][: n - len(numbers)]
        ids = reserve_ids(Customer.__table__, len(numbers))
        customers, subs = [], []
        for customer_id, number in zip(ids, numbers, strict=True):
            row = _customer(rng, customer_id, number, now)
            kinds = ["cancelled"] if rng.random() < 0.08 else ["live"] + (["live"] if rng.random() < 0.15 else [])
            states = []
            for index, kind in enumerate(kinds, 1):
                sub = _subscription(rng, customer_id, row, kind, index, active_plans, retired, day, ip_pool)
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
        bulk_insert(Customer.__table__, customers)
        bulk_insert(Subscription.__table__, subs)
        total_subs += len(subs)
        if progress:
            progress(n)
    invalidate_customer_totals()
    invalidate_dashboard()
    return Generated(count, total_subs, time.perf_counter() - started)


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


def _subscription(rng, customer_id, customer, kind, number, active_plans, retired, day, ip_pool) -> dict:
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
    if end and end < start:
        end = start
    ip = None
    if status != "cancelled" and rng.random() < 0.15:
        ip = str(IPv4Address(int(IPv4Address("100.64.0.0")) + next(ip_pool, 0)))
    created = customer["created_at"]
    return dict(
        customer_id=customer_id, plan_id=plan["id"], status=status, suspension_reason=reason,
        start_date=start, end_date=end, billing_day=billing_day, next_bill_date=next_bill,
        price_override_cents=plan["monthly_price_cents"] - 500 if rng.random() < 0.05 and
        plan["monthly_price_cents"] >= 500 else None,
        pppoe_username=f"{customer['account_number'].lower()}-{number}" if status != "cancelled"
        else None,
        static_ip=ip if ip and ip != "100.64.0.0" else None,
        cpe_mac=":".join(f"{rng.randint(0, 255):02X}" for _ in range(6)),
        created_at=created, updated_at=created,
    )

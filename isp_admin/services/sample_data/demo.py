"""A believable billing history for the demo (`make run`): two past runs, payments, some debt."""
from __future__ import annotations

import random
from datetime import date, timedelta

from sqlalchemy import select, text

from isp_admin.extensions import db
from isp_admin.models import Invoice
from isp_admin.services.billing import collections, payments
from isp_admin.services.billing import run as billing
from isp_admin.services.billing.calendar import bill_date_on_or_before


def bill_history(today: date, seed: int = 42) -> dict:
    """Bill the demo's live subscriptions from two months back, pay most invoices, leave some overdue."""
    rng = random.Random(seed)
    start = today - timedelta(days=62)
    rows = db.session.execute(text(
        "SELECT id, billing_day FROM subscriptions WHERE status IN ('active', 'suspended')")).all()
    shifted = [{"id": sub_id, "d": max(bill_date_on_or_before(start, day), start - timedelta(days=27))}
               for sub_id, day in rows]
    if shifted:
        db.session.execute(text("UPDATE subscriptions SET next_bill_date = :d, billed_from = :d, "
                                "start_date = CASE WHEN start_date < :d THEN start_date ELSE :d END WHERE id = :id"),
                           shifted)
        # A subscription suspended in the demo was suspended from the start of its history, not from today.
        db.session.execute(text("UPDATE suspension_periods SET started_on = :d WHERE subscription_id = :id "
                                "AND ended_on IS NULL"), shifted)
    counts = {"invoices": 0, "payments": 0}
    for as_of in (today - timedelta(days=45), today - timedelta(days=15)):
        for first_last in billing.chunk_ranges(billing.customers_due(as_of), 500):
            counts["invoices"] += billing.bill_customer_range(as_of, first_last)["invoices"]
        for invoice in db.session.scalars(select(Invoice).where(Invoice.issue_date == as_of)):
            if rng.random() < 0.8:  # most customers pay, a few days after the invoice
                paid_on = min(today, as_of + timedelta(days=rng.randint(1, 12)))
                payments.record_payment(invoice.customer_id, invoice.total_cents, rng.choice(
                    ("mobile_money", "bank_transfer", "card", "cash")), paid_on, today,
                    reference=f"DEMO-{invoice.id}")
                counts["payments"] += 1
    collections.run_mark_overdue(today)
    return counts


def network_history(today: date, seed: int = 42) -> dict:
    """A router, PPPoE passwords and a day of RADIUS accounting, so the network pages show a living network."""
    from isp_admin.models import Nas, NetworkCredential, RadAcct, Subscription
    from isp_admin.models.base import utcnow
    from isp_admin.services.network.credentials import generate_password

    rng = random.Random(seed)
    db.session.add(Nas(nasname="10.0.0.1", shortname="bras-demo", type="mikrotik", secret=generate_password(),
                       description="Demo BRAS (MikroTik CCR)"))
    subs = db.session.execute(select(Subscription.id, Subscription.pppoe_username, Subscription.status,
                                     Subscription.static_ip).where(Subscription.status != "cancelled",
                                                                   Subscription.pppoe_username.is_not(None))).all()
    now = utcnow()
    db.session.add_all(NetworkCredential(subscription_id=s.id, password=generate_password(), created_at=now,
                                         rotated_at=now) for s in subs)
    sessions = 0
    for s in subs:
        for back in range(rng.randint(0, 3)):  # a few finished sessions in the last weeks
            start = now - timedelta(days=rng.randint(2, 40), hours=rng.randint(0, 23))
            length = rng.randint(600, 5 * 86400)
            db.session.add(RadAcct(acctsessionid=f"{s.id:06x}{back:02x}", acctuniqueid=f"demo-{s.id}-{back}",
                                   username=s.pppoe_username, nasipaddress="10.0.0.1", nasportid="pppoe-demo",
                                   acctstarttime=start, acctupdatetime=start + timedelta(seconds=length),
                                   acctstoptime=start + timedelta(seconds=length), acctsessiontime=length,
                                   acctinputoctets=rng.randint(10**8, 4 * 10**9),
                                   acctoutputoctets=rng.randint(10**9, 60 * 10**9),
                                   acctterminatecause="User-Request",
                                   framedipaddress=s.static_ip or f"100.64.{s.id // 250 % 250}.{s.id % 250 + 2}"))
            sessions += 1
        # Most active customers are online now; one manually suspended customer still is (a planted mismatch).
        if (s.status == "active" and rng.random() < 0.7) or (s.status == "suspended" and rng.random() < 0.1):
            start = now - timedelta(hours=rng.randint(1, 240))
            db.session.add(RadAcct(acctsessionid=f"{s.id:06x}ff", acctuniqueid=f"demo-{s.id}-open",
                                   username=s.pppoe_username, nasipaddress="10.0.0.1", nasportid="pppoe-demo",
                                   acctstarttime=start, acctupdatetime=now - timedelta(minutes=rng.randint(0, 5)),
                                   acctsessiontime=int((now - start).total_seconds()),
                                   acctinputoctets=rng.randint(10**7, 10**9),
                                   acctoutputoctets=rng.randint(10**8, 2 * 10**10),
                                   framedipaddress=s.static_ip or f"100.64.{s.id // 250 % 250}.{s.id % 250 + 2}"))
            sessions += 1
    db.session.flush()
    return {"credentials": len(subs), "sessions": sessions}


def portal_demo_customer() -> tuple[int, str] | None:
    """(id, account number) of the customer the demo opens the portal for: one who owes, else any active one."""
    from isp_admin.models import Customer

    owing = select(Invoice.customer_id).where(Invoice.status == "overdue").order_by(Invoice.customer_id).limit(1)
    row = db.session.execute(select(Customer.id, Customer.account_number)
                             .where(Customer.id == owing.scalar_subquery())).first()
    if row is None:
        row = db.session.execute(select(Customer.id, Customer.account_number).where(Customer.status == "active")
                                 .order_by(Customer.id).limit(1)).first()
    return (row.id, row.account_number) if row else None

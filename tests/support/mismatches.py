"""Planting billing ↔ network mismatches: sessions (radacct), login attempts (radpostauth) and dated changes, as
FreeRADIUS and the subscriptions trigger would have written them."""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from isp_admin.extensions import db
from isp_admin.models import CoaRequest, NetworkChange, NetworkCredential, RadAcct, RadPostAuth, Subscription
from isp_admin.models.base import utcnow
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

NAS = "127.0.0.1"


def subscription(login: str, plan=None, **fields) -> Subscription:
    """A subscription with this login, for a customer named after it ("Customer <login>")."""
    customer = CustomerFactory(name=f"Customer {login}")
    return SubscriptionFactory(customer=customer, plan=plan or PlanFactory(), pppoe_username=login, **fields)


def change(sub_id: int, at: datetime, **values) -> None:
    """Change a subscription as any path would (the trigger records it), and date that change `at`."""
    db.session.execute(update(Subscription).where(Subscription.id == sub_id).values(**values))
    latest = db.session.scalar(select(func.max(NetworkChange.id)).where(NetworkChange.subscription_id == sub_id))
    assert latest is not None, "the trigger recorded no change"
    db.session.execute(update(NetworkChange).where(NetworkChange.id == latest).values(created_at=at, processed_at=at))
    db.session.commit()


def online(login: str | None, unique: str, started: datetime, framed_ip: str | None = None, nas: str = NAS,
           stopped: datetime | None = None) -> RadAcct:
    """An accounting session (open unless `stopped`)."""
    row = RadAcct(acctsessionid=unique.upper(), acctuniqueid=unique, username=login, nasipaddress=nas,
                  framedipaddress=framed_ip, acctstarttime=started, acctstoptime=stopped)
    db.session.add(row)
    db.session.commit()
    return row


def attempt(login: str, reply: str, at: datetime) -> None:
    """A login attempt's outcome, as FreeRADIUS's post-auth writes it."""
    db.session.add(RadPostAuth(username=login, reply=reply, authdate=at))
    db.session.commit()


def plant_every_kind() -> set[tuple[str, str]]:
    """Each kind of mismatch, and near misses that are not; return the (kind, login) pairs a check must list."""
    t0 = utcnow() - timedelta(hours=3)
    home, fast = PlanFactory(code="HOME50"), PlanFactory(code="FIBRE200")

    manual = subscription("manual", home)  # suspended by hand after it came online: still online
    online("manual", "s-manual", t0)
    change(manual.id, t0 + timedelta(hours=1), status="suspended", suspension_reason="manual")
    subscription("late", home, status="suspended", suspension_reason="vacation")  # rejected: any session is wrong
    online("late", "s-late", t0 + timedelta(hours=2))
    subscription("pending", home, status="pending")
    online("pending", "s-pending", t0 + timedelta(hours=2))

    walled = subscription("walled", home)  # walled garden, but still on the full-speed session
    online("walled", "s-walled", t0)
    change(walled.id, t0 + timedelta(hours=1), status="suspended", suspension_reason="non_payment")
    garden = subscription("garden", home)  # came back into the walled garden after the change: right
    change(garden.id, t0 + timedelta(hours=1), status="suspended", suspension_reason="non_payment")
    online("garden", "s-garden", t0 + timedelta(minutes=90))

    moved = subscription("moved", home)  # new plan, no CoA acknowledged: still the old rate
    online("moved", "s-moved", t0)
    change(moved.id, t0 + timedelta(hours=1), plan_id=fast.id)
    changed = subscription("changed", home)  # new plan, and the NAS acknowledged the CoA: right
    online("changed", "s-changed", t0)
    change(changed.id, t0 + timedelta(hours=1), plan_id=fast.id)
    db.session.add(CoaRequest(subscription_id=changed.id, nas_address=NAS, username="changed",
                              acct_session_id="S-CHANGED", acct_unique_id="s-changed", kind="coa", reason="plan_change",
                              status="acked", attempts=1, created_at=t0 + timedelta(minutes=61)))
    db.session.commit()
    subscription("steady", home)
    online("steady", "s-steady", t0)

    refused = subscription("refused", home)  # active, refused since its last change
    db.session.add(NetworkCredential(subscription_id=refused.id, password="Passw0rdPass"))
    db.session.commit()
    attempt("refused", "Access-Reject", t0 + timedelta(hours=2))
    subscription("nopass", home)
    attempt("nopass", "Access-Reject", t0 + timedelta(hours=2))
    earlier = subscription("earlier", home)  # refused before its last change only
    attempt("earlier", "Access-Reject", t0 + timedelta(hours=1))
    change(earlier.id, t0 + timedelta(hours=2), static_ip="100.64.9.9")
    subscription("fixed", home)  # refused, then accepted
    attempt("fixed", "Access-Reject", t0 + timedelta(hours=1))
    attempt("fixed", "Access-Accept", t0 + timedelta(hours=2))

    online("ghost", "s-ghost", t0)  # nobody has this login
    gone = subscription("gone", home)  # cancelled, still online
    online("gone", "s-gone", t0)
    change(gone.id, t0 + timedelta(hours=1), status="cancelled")
    online("nobody", "s-nobody", t0, stopped=t0 + timedelta(hours=1))  # unknown, but ended

    subscription("owner", home, static_ip="100.64.0.7")
    subscription("intruder", home)
    online("intruder", "s-intruder", t0, framed_ip="100.64.0.7")  # on the owner's static IP
    subscription("own", home, static_ip="100.64.0.8")
    online("own", "s-own", t0, framed_ip="100.64.0.8")  # on its own static IP: right
    return {("stale_session", "manual"), ("stale_session", "late"), ("stale_session", "pending"),
            ("stale_session", "walled"), ("stale_session", "moved"), ("rejected_while_active", "refused"),
            ("rejected_while_active", "nopass"), ("unknown_login", "ghost"), ("unknown_login", "gone"),
            ("address_conflict", "intruder")}


def found(report) -> set[tuple[str, str]]:
    """The (kind, login) pairs a report lists."""
    return {(row.kind, row.login) for row in report.rows}

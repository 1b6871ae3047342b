"""Portal sign-in: by account number or email, throttled as staff sign-in is.

Failures share the staff throttle table (sign_in_throttles), keyed "portal:<identifier as typed>" so that staff
and portal failures never count against each other, and follow the staff rules: per typed identifier and client
address, with the waits of identity.users.throttle_wait.
"""
from __future__ import annotations

import math
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from isp_admin.extensions import db
from isp_admin.models.portal import PortalAccount
from isp_admin.models.users import SignInThrottle
from isp_admin.services.identity.users import THROTTLE_MEMORY, Throttled, password_matches, throttle_wait
from isp_admin.services.platform import audit
from isp_admin.services.platform.clock import utcnow
from isp_admin.services.portal.accounts import customers_for, normalise_identifier

THROTTLE_PREFIX = "portal:"

__all__ = ["Throttled", "authenticate"]


def _throttle_of(key: str, address: str) -> SignInThrottle | None:
    return db.session.scalar(select(SignInThrottle).where(SignInThrottle.email == key,
                                                          SignInThrottle.client_address == address))


def _record_failure(key: str, address: str, now: datetime) -> None:
    table = SignInThrottle.__table__
    insert = postgresql_insert if db.session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # One statement, so concurrent failures from one address all count (as identity.users does for staff).
    stmt = insert(table).values(email=key, client_address=address, failures=1, last_failure_at=now)
    stmt = stmt.on_conflict_do_update(index_elements=[table.c.email, table.c.client_address],
                                      set_={"failures": table.c.failures + 1, "last_failure_at": now})
    row = db.session.execute(stmt.returning(table.c.id, table.c.failures)).one()
    wait = throttle_wait(row.failures)
    if wait:
        db.session.execute(update(table).where(table.c.id == row.id).values(blocked_until=now + wait))
    db.session.execute(delete(table).where(table.c.email.startswith(THROTTLE_PREFIX),
                                           table.c.last_failure_at < now - THROTTLE_MEMORY,
                                           or_(table.c.blocked_until.is_(None), table.c.blocked_until < now)))


def authenticate(identifier: str, password: str, address: str | None = None) -> PortalAccount | Throttled | None:
    """Check a portal sign-in by account number or email: the account, None (failure counted), or Throttled.

    Unknown identifiers, customers without a portal password and wrong passwords take the same steps: the same
    queries, a hash check of the same cost, the same failure write.
    """
    now = utcnow()
    key = THROTTLE_PREFIX + normalise_identifier(identifier)
    client = (address or "unknown")[:64]
    throttle = _throttle_of(key, client)
    if throttle is not None and throttle.blocked_until is not None and throttle.blocked_until > now:
        return Throttled(max(1, math.ceil((throttle.blocked_until - now).total_seconds())))
    found = customers_for(identifier, limit=2)
    customer = found[0] if len(found) == 1 else None  # an email two customers share must sign in by account number
    # Asked even when there is no customer (id 0 is nobody's), so both paths run the same statements.
    account = db.session.scalar(select(PortalAccount).where(
        PortalAccount.customer_id == (customer.id if customer is not None else 0)))
    stored = account.password_hash if account is not None and account.password_hash else None
    # No account or no password yet: a hash check of the same cost all the same, so timing tells nothing.
    if not password_matches(stored, password) or customer.status == "closed":
        _record_failure(key, client, now)
        db.session.flush()
        return None
    if throttle is not None:
        db.session.delete(throttle)
    account.last_login_at = now
    db.session.flush()
    with audit.acting_as(audit.Actor("customer", customer.id, f"portal:{customer.account_number}", client)):
        audit.record("portal_account.login", account, customer_id=customer.id)
    return account

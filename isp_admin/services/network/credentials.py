"""PPPoE credentials: a password per subscription, generated here, shown to staff once, never logged or listed."""
from __future__ import annotations

import secrets
import string

from sqlalchemy import select

from isp_admin.errors import BusinessRuleViolation
from isp_admin.extensions import db
from isp_admin.models import NetworkCredential, Subscription
from isp_admin.models.base import utcnow
from isp_admin.services.billing.ledger import lock_and_load
from isp_admin.services.platform import audit

# Letters and digits without look-alikes (0/O, 1/l/I): it is read aloud over the phone and typed into a router.
ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "0O1lI")
LENGTH = 12


def generate_password() -> str:
    """A random password of LENGTH characters (~68 bits)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def has_credentials(subscription_ids: list[int]) -> set[int]:
    """Which of these subscriptions have a password set (one query)."""
    if not subscription_ids:
        return set()
    return set(db.session.scalars(select(NetworkCredential.subscription_id)
                                  .where(NetworkCredential.subscription_id.in_(subscription_ids))))


def set_password(subscription_id: int) -> str:
    """Generate (or regenerate) the subscription's PPPoE password and return it: the only time it is shown."""
    sub = lock_and_load(Subscription, subscription_id, "No such subscription.")
    if sub.status == "cancelled":
        raise BusinessRuleViolation("A cancelled subscription has no network login.")
    if not sub.pppoe_username:
        raise BusinessRuleViolation("Set a PPPoE username first.")
    password = generate_password()
    credential = db.session.get(NetworkCredential, sub.id)
    now = utcnow()
    if credential is None:
        db.session.add(NetworkCredential(subscription_id=sub.id, password=password, created_at=now, rotated_at=now))
        action = "subscription.credentials_set"
    else:
        credential.password, credential.rotated_at = password, now
        action = "subscription.credentials_regenerated"
    # The audit says that it changed, never what to.
    audit.record(action, sub, after={"pppoe_username": sub.pppoe_username}, customer_id=sub.customer_id)
    db.session.flush()
    return password

"""The network policy an ISP configures: what each suspension reason does, and the fixed groups' attributes."""
from __future__ import annotations

from sqlalchemy import select

from isp_admin.errors import Invalid
from isp_admin.extensions import db
from isp_admin.models import GroupAttribute, SuspensionPolicy
from isp_admin.models.network import DEFAULT_GROUP_ATTRIBUTES, DEFAULT_POLICIES, NETWORK_ACTIONS
from isp_admin.services.platform import audit


def ensure_defaults() -> None:
    """Write the default policies and group attributes where none exist (migration 0008 writes the same)."""
    have = set(db.session.scalars(select(SuspensionPolicy.reason)))
    for reason, action in DEFAULT_POLICIES.items():
        if reason not in have:
            db.session.add(SuspensionPolicy(reason=reason, action=action))
    if db.session.scalar(select(GroupAttribute.id).limit(1)) is None:
        for groupname, kind, attribute, op, value in DEFAULT_GROUP_ATTRIBUTES:
            db.session.add(GroupAttribute(groupname=groupname, kind=kind, attribute=attribute, op=op, value=value))
    db.session.flush()


def list_policies() -> list[SuspensionPolicy]:
    """Every reason's network action."""
    return list(db.session.scalars(select(SuspensionPolicy).order_by(SuspensionPolicy.reason)))


def set_policy(reason: str, action: str) -> SuspensionPolicy:
    """Change what a suspension for `reason` does (takes effect at the next authentication)."""
    if action not in NETWORK_ACTIONS:
        raise Invalid("Please correct the highlighted fields.", {"action": "Choose walled garden or reject."})
    policy = db.session.scalar(select(SuspensionPolicy).where(SuspensionPolicy.reason == reason))
    if policy is None:
        raise Invalid("Please correct the highlighted fields.", {"reason": "Unknown suspension reason."})
    before = policy.action
    policy.action = action
    if before != action:
        audit.record("network.policy", policy, before={"action": before}, after={"action": action})
    db.session.flush()
    return policy

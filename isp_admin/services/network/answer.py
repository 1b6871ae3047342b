"""What FreeRADIUS would answer a login now, read from the very views it reads (radcheck, radreply, radusergroup,
radgroupcheck, radgroupreply), in one statement. The password itself is never selected: only that it exists."""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import text

from isp_admin.extensions import db
from isp_admin.models.network import WALLED_GARDEN_GROUP

# rlm_sql's lookups (deploy/freeradius/sql: a login in any case, both sides lower-cased) in its order: the user's
# check and reply items, then its groups by priority, each group's check and reply.
_ROWS = text("""
SELECT 'check' AS source, CAST(NULL AS VARCHAR(64)) AS groupname, attribute, op,
       CAST(NULL AS VARCHAR(253)) AS value, 0 AS priority, id
FROM radcheck WHERE lower(username) = lower(:username)
UNION ALL
SELECT 'reply', NULL, attribute, op, value, 0, id FROM radreply WHERE lower(username) = lower(:username)
UNION ALL
SELECT 'group', groupname, NULL, NULL, NULL, priority, id
FROM radusergroup WHERE lower(username) = lower(:username)
UNION ALL
SELECT 'group_check', ug.groupname, gc.attribute, gc.op, gc.value, ug.priority, gc.id
FROM radusergroup ug JOIN radgroupcheck gc ON gc.groupname = ug.groupname
WHERE lower(ug.username) = lower(:username)
UNION ALL
SELECT 'group_reply', ug.groupname, gr.attribute, gr.op, gr.value, ug.priority, gr.id
FROM radusergroup ug JOIN radgroupreply gr ON gr.groupname = ug.groupname
WHERE lower(ug.username) = lower(:username)
ORDER BY priority, source, id""")


@dataclass(frozen=True)
class RadiusAnswer:
    """Accept (a plan's group), the walled garden, or Reject with the reasons; and the reply attributes."""

    verdict: str  # "accept" | "walled_garden" | "reject"
    group: str | None = None
    reasons: tuple[str, ...] = ()
    attributes: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)  # (attribute, op, value)
    password_stored: bool = False

    @property
    def summary(self) -> str:
        """One line: "Accept: plan-HOME50, Mikrotik-Rate-Limit 10M/50M, …", "Walled garden: …", "Reject (…)"."""
        items = ", ".join(f"{attribute} {value}" for attribute, _op, value in self.attributes)
        if self.verdict == "reject":
            return f"Reject ({'; '.join(self.reasons)})"
        if self.verdict == "walled_garden":
            return f"Walled garden: {items}" if items else "Walled garden"
        return f"Accept: {', '.join(filter(None, [self.group, items]))}"


def _reject_reason(status: str | None, reason: str | None) -> str:
    if status == "suspended":
        return f"suspended: {(reason or 'unknown').replace('_', ' ')}"
    if status == "pending":
        return "not started yet"
    return "rejected by its group"


def radius_answer(username: str | None, status: str | None, reason: str | None) -> RadiusAnswer:
    """What RADIUS answers `username` now; status and reason (the subscription's) only word a reject's cause."""
    if not username:
        return RadiusAnswer("reject", reasons=("no PPPoE login",))
    if status == "cancelled":
        # The views hold no rows for a cancelled subscription; its login may since belong to another one.
        return RadiusAnswer("reject", reasons=("cancelled",))
    rows = db.session.execute(_ROWS, {"username": username}).all()
    password = any(r.source == "check" and r.attribute == "Cleartext-Password" for r in rows)
    groups = [r.groupname for r in rows if r.source == "group"]
    group = groups[0] if groups else None  # without Fall-Through only the first group applies
    checks = [r for r in rows if r.source == "group_check" and r.groupname == group]
    # The group's (the plan's rate) first, then the login's own (its static IP): the order staff read them in.
    replies = tuple((r.attribute, r.op, r.value) for r in rows if r.source == "group_reply" and r.groupname == group)
    replies += tuple((r.attribute, r.op, r.value) for r in rows if r.source == "reply")
    reasons = []
    if any(r.attribute == "Auth-Type" and r.value == "Reject" for r in checks):
        reasons.append(_reject_reason(status, reason))
    if not password:
        reasons.append("no password set")
    if group is None and password:
        reasons.append("no group")
    if reasons:
        # A reject carries only its Reply-Message (attr_filter.access_reject drops the rest).
        message = tuple(item for item in replies if item[0] == "Reply-Message")
        return RadiusAnswer("reject", group, tuple(reasons), message, password)
    verdict = "walled_garden" if group == WALLED_GARDEN_GROUP else "accept"
    return RadiusAnswer(verdict, group, (), replies, password)

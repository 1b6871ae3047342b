"""The network policy an ISP configures: what each suspension reason does, the fixed groups' attributes, and the
extra RADIUS attributes of each plan.

FreeRADIUS reads these rows through the radgroupcheck/radgroupreply views at every authentication, and rlm_sql
fails the WHOLE request (an Access-Reject) on a row it cannot parse: an attribute its dictionary lacks, or a value
that does not fit the attribute's type ("abc" for an integer, a name for an IP address). One bad row would lock out
every customer of a plan, or everyone in the walled garden. So a row is checked before it is stored: against
FreeRADIUS's own dictionaries where they are installed (the name must be one it knows), else against the format
rule and our vendored dictionary's types. A value wrapped in backquotes is refused too: FreeRADIUS expands it as a
template (`%{exec:…}` runs a program), which no staff form may reach.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import GroupAttribute, PlanAttribute, SuspensionPolicy
from isp_admin.models.network import (
    ATTRIBUTE_KINDS,
    ATTRIBUTE_OPS,
    DEFAULT_GROUP_ATTRIBUTES,
    DEFAULT_POLICIES,
    NETWORK_ACTIONS,
    REJECTED_GROUP,
    WALLED_GARDEN_GROUP,
)
from isp_admin.services.customers.plans import get_plan
from isp_admin.services.network.radius import DICTIONARY as VENDORED_DICTIONARY
from isp_admin.services.platform import audit

GROUPS = (WALLED_GARDEN_GROUP, REJECTED_GROUP)
REPLY_OPS = (":=", "=", "+=")  # a comparison in a reply row is silently dropped by FreeRADIUS: refused instead
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
DICTIONARY_DIR = Path("/usr/share/freeradius")  # Debian's freeradius-common; the server loads this, then LOCAL
LOCAL_DICTIONARY = Path("/etc/freeradius/3.0/dictionary")
RATE_LIMIT = "Mikrotik-Rate-Limit"
# Attributes that decide authentication itself (Auth-Type := Accept on a plan would let any password in).
_AUTH_DECIDING = {"auth-type", "autz-type", "post-auth-type", "password-with-header", "user-password"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RATE = r"\d+(?:\.\d+)?[kKmMgG]?"
_RATE_PAIR = rf"{_RATE}(?:/{_RATE})?"
# MikroTik's rate-limit: rx[/tx] [burst-rx[/tx] [threshold-rx[/tx] [burst-time-rx[/tx] [priority [min-rx[/tx]]]]]].
_RATE_LIMIT = re.compile(rf"^{_RATE_PAIR}(?: {_RATE_PAIR}(?: {_RATE_PAIR}(?: \d+(?:/\d+)?"
                         rf"(?: [1-8](?: {_RATE_PAIR})?)?)?)?)?$")
_LIST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # a RouterOS pool or address-list name
_RANGES = {"byte": (0, 255), "short": (0, 65535), "integer": (0, 2**32 - 1), "signed": (-(2**31), 2**31 - 1),
           "integer64": (0, 2**64 - 1)}
_CONTAINERS = {"tlv", "vsa", "extended", "long-extended", "evs"}
_DATES = ("%B %d %Y", "%b %d %Y", "%B %d %Y %H:%M", "%b %d %Y %H:%M", "%B %d %Y %H:%M:%S", "%b %d %Y %H:%M:%S")
FIX = "Please correct the highlighted fields."


# --- attributes: the dictionary and the checks ---------------------------------------------------------------


@dataclass(frozen=True)
class RadiusDictionary:
    """Attribute names (lower-cased → spelling, type) and VALUE names; `complete` when it is FreeRADIUS's own."""

    names: dict[str, tuple[str, str]]
    values: dict[str, frozenset[str]]
    complete: bool


def _read(path: Path, names: dict, values: dict, seen: set) -> None:
    if path in seen or not path.is_file():
        return
    seen.add(path)
    for line in path.read_text(errors="replace").splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 2 and words[0] in ("$INCLUDE", "$INCLUDE-"):
            _read(path.parent / words[1], names, values, seen)
        elif len(words) >= 4 and words[0] == "ATTRIBUTE":
            names.setdefault(words[1].lower(), (words[1], words[3].split("[")[0].lower()))
        elif len(words) >= 4 and words[0] == "VALUE":
            values.setdefault(words[1].lower(), set()).add(words[2].lower())


@lru_cache(maxsize=4)
def _load(directory: Path, local: Path) -> RadiusDictionary:
    names: dict = {}
    values: dict = {}
    complete = (directory / "dictionary").is_file()
    if complete:  # only what its root file includes is loaded by the server, so only that counts
        _read(directory / "dictionary", names, values, set())
        _read(local, names, values, set())
    _read(VENDORED_DICTIONARY, names, values, set())
    return RadiusDictionary(names, {k: frozenset(v) for k, v in values.items()}, complete)


def radius_dictionary() -> RadiusDictionary:
    """The attribute dictionary checks use: FreeRADIUS's where installed, else our vendored one (partial)."""
    return _load(DICTIONARY_DIR, LOCAL_DICTIONARY)


def _value_error(attribute: str, kind_of: str | None, value: str, known_values: frozenset[str]) -> str | None:
    if attribute == RATE_LIMIT and not _RATE_LIMIT.match(value):
        return "MikroTik's rate, upload first: e.g. 10M/50M, or 256k/256k."
    if attribute in ("Framed-Pool", "Mikrotik-Address-List") and not _LIST_NAME.match(value):
        return "A name of letters, digits, '-', '_', '.' or ':' (at most 64)."
    if kind_of in _CONTAINERS:
        return "This attribute holds other attributes; it has no value of its own."
    if kind_of in _RANGES:
        low, high = _RANGES[kind_of]
        if value.lower() in known_values:
            return None
        if not re.fullmatch(r"-?\d{1,20}", value) or not low <= int(value) <= high:
            return f"A whole number from {low} to {high}" + (" or one of its named values." if known_values else ".")
        return None
    parsers = {"ipaddr": ipaddress.IPv4Address, "ipv6addr": ipaddress.IPv6Address, "combo-ip": ipaddress.ip_address,
               "ipv4prefix": lambda v: ipaddress.IPv4Network(v, strict=False),
               "ipv6prefix": lambda v: ipaddress.IPv6Network(v, strict=False)}
    if kind_of in parsers:
        try:
            parsers[kind_of](value)
        except ValueError:
            return "An IP address (or prefix) written out in digits." if "ip" in kind_of else "Not a valid value."
    if kind_of == "ether" and not re.fullmatch(r"(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}", value):
        return "A MAC address, e.g. 00:11:22:33:44:55."
    if kind_of == "date" and not value.isdigit() and not _is_date(value):
        return "A date like 'January 1 2030' (optionally with HH:MM), or a Unix time."
    return None


def _is_date(value: str) -> bool:
    for pattern in _DATES:
        try:
            datetime.strptime(value, pattern)  # noqa: DTZ007  (only the shape is checked; FreeRADIUS reads it)
            return True
        except ValueError:
            continue
    return False


def check_attribute(kind: str, attribute, op, value) -> tuple[str, str, str]:
    """Return (attribute, op, value) spelled as FreeRADIUS will read them, or raise Invalid with field errors."""
    errors: dict[str, str] = {}
    if kind not in ATTRIBUTE_KINDS:
        errors["kind"] = "Check or reply."
    attribute = str(attribute or "").strip()
    kind_of = None
    dictionary = radius_dictionary()
    if not NAME.match(attribute):
        errors["attribute"] = "An attribute name: letters, digits and '-', starting with a letter (at most 64)."
    else:
        known = dictionary.names.get(attribute.lower())
        if known:
            attribute, kind_of = known  # FreeRADIUS's spelling: the views compare names exactly
        elif dictionary.complete:
            errors["attribute"] = ("FreeRADIUS's dictionary has no such attribute; with it, every login it "
                                   "applies to would be rejected.")
        lowered = attribute.lower()
        if lowered in _AUTH_DECIDING or lowered.endswith("-password"):
            errors["attribute"] = "This attribute decides authentication itself; it cannot be set here."
    allowed = REPLY_OPS if kind == "reply" else ATTRIBUTE_OPS
    if op not in allowed:
        errors["op"] = f"One of {' '.join(allowed)}" + (" (a reply attribute is assigned)." if kind == "reply" else ".")
    value = str(value if value is not None else "").strip()
    if not value:
        errors["value"] = "Required."
    elif len(value.encode()) > 253:
        errors["value"] = "At most 253 bytes (RADIUS's limit for one attribute)."
    elif _CONTROL.search(value):
        errors["value"] = "One line of text, without control characters."
    elif value.startswith("`"):
        errors["value"] = "A value in backquotes is run by FreeRADIUS as a template; write it without them."
    elif "attribute" not in errors:
        problem = _value_error(attribute, kind_of, value, dictionary.values.get(attribute.lower(), frozenset()))
        if problem:
            errors["value"] = problem
    if errors:
        raise Invalid(FIX, errors)
    return attribute, op, value


def _described(row) -> dict:
    return {"kind": row.kind, "attribute": row.attribute, "op": row.op, "value": row.value}


def _flush_guarding(message: str) -> None:
    # The unique constraint is the real guard when two staff add the same attribute at once.
    try:
        db.session.flush()
    except IntegrityError:
        raise Conflict(message, {"attribute": "Already set."}) from None


# --- suspension policy and the fixed groups ------------------------------------------------------------------


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
        raise Invalid(FIX, {"action": "Choose walled garden or reject."})
    policy = db.session.scalar(select(SuspensionPolicy).where(SuspensionPolicy.reason == reason))
    if policy is None:
        raise Invalid(FIX, {"reason": "Unknown suspension reason."})
    before = policy.action
    policy.action = action
    if before != action:
        audit.record("network.policy", policy, before={"reason": reason, "action": before},
                     after={"reason": reason, "action": action})
    db.session.flush()
    return policy


# The settings page's fields for the fixed groups' attributes: (group, kind, attribute).
FIXED_FIELDS = {
    "walled_garden_pool": (WALLED_GARDEN_GROUP, "reply", "Framed-Pool"),
    "walled_garden_rate": (WALLED_GARDEN_GROUP, "reply", RATE_LIMIT),
    "walled_garden_address_list": (WALLED_GARDEN_GROUP, "reply", "Mikrotik-Address-List"),
    "reject_message": (REJECTED_GROUP, "reply", "Reply-Message"),
}


def _group_row(groupname: str, kind: str, attribute: str) -> GroupAttribute | None:
    return db.session.scalar(select(GroupAttribute).where(
        GroupAttribute.groupname == groupname, GroupAttribute.kind == kind,
        func.lower(GroupAttribute.attribute) == attribute.lower()))


def current_settings() -> dict:
    """The page's values: each reason's action (keyed by reason) and each fixed attribute's value (or None)."""
    values: dict = {p.reason: p.action for p in list_policies()}
    for field, key in FIXED_FIELDS.items():
        row = _group_row(*key)
        values[field] = row.value if row else None
    return values


def save_settings(policies: dict[str, str], **fixed) -> int:
    """Save the policy per reason and the fixed attributes (empty removes one); return how many changed."""
    errors: dict[str, str] = {}
    known = {p.reason: p.action for p in list_policies()}
    for reason, action in policies.items():
        if reason not in known or action not in NETWORK_ACTIONS:
            errors[reason] = "Choose walled garden or reject."
    clean = {}
    for field, value in fixed.items():
        if field not in FIXED_FIELDS:
            raise Invalid(FIX, {field: "Not a network setting."})
        groupname, kind, attribute = FIXED_FIELDS[field]
        if not str(value or "").strip():
            clean[field] = None
            continue
        try:
            clean[field] = check_attribute(kind, attribute, ":=", value)[2]
        except Invalid as exc:
            errors[field] = exc.details.get("value") or next(iter(exc.details.values()))
    if errors:
        raise Invalid(FIX, errors)
    changed = sum(1 for reason, action in policies.items() if known[reason] != action)
    for reason, action in policies.items():
        set_policy(reason, action)
    for field, value in clean.items():
        changed += _put_group_attribute(*FIXED_FIELDS[field], value)
    return changed


def _put_group_attribute(groupname: str, kind: str, attribute: str, value: str | None) -> bool:
    row = _group_row(groupname, kind, attribute)
    if value is None:
        if row is None:
            return False
        audit.record("network.group_attribute_remove", row, before={"group": groupname, **_described(row)})
        db.session.delete(row)
    elif row is None:
        row = GroupAttribute(groupname=groupname, kind=kind, attribute=attribute, op=":=", value=value)
        db.session.add(row)
        _flush_guarding("This attribute was just set by someone else; reload the page.")
        audit.record("network.group_attribute_add", row, after={"group": groupname, **_described(row)})
    elif row.value != value:
        audit.record("network.group_attribute_update", row, before={"group": groupname, "value": row.value},
                     after={"group": groupname, "attribute": row.attribute, "value": value})
        row.value = value
    else:
        return False
    db.session.flush()
    return True


def list_group_attributes() -> list[GroupAttribute]:
    """Every attribute of the walled-garden and rejected groups."""
    return list(db.session.scalars(select(GroupAttribute).order_by(
        GroupAttribute.groupname, GroupAttribute.kind, GroupAttribute.attribute)))


def add_group_attribute(groupname: str, kind: str, attribute, op, value) -> GroupAttribute:
    """Add an attribute to a fixed group (audited); one per group, kind and name."""
    if groupname not in GROUPS:
        raise Invalid(FIX, {"groupname": "The walled garden or the rejected group."})
    attribute, op, value = check_attribute(kind, attribute, op, value)
    if _group_row(groupname, kind, attribute):
        raise Conflict("This group already has that attribute; remove it first to change it.",
                       {"attribute": "Already set."})
    row = GroupAttribute(groupname=groupname, kind=kind, attribute=attribute, op=op, value=value)
    db.session.add(row)
    _flush_guarding("This group already has that attribute.")
    audit.record("network.group_attribute_add", row, after={"group": groupname, **_described(row)})
    return row


def remove_group_attribute(groupname: str, kind: str, attribute: str) -> None:
    """Remove an attribute from a fixed group (audited); the rejected group's Auth-Type stays."""
    row = _group_row(groupname, kind, str(attribute or ""))
    if row is None:
        raise NotFound("That group has no such attribute.")
    if row.groupname == REJECTED_GROUP and row.attribute.lower() == "auth-type":
        raise BusinessRuleViolation("Auth-Type := Reject is what makes the rejected group reject; it stays.")
    audit.record("network.group_attribute_remove", row, before={"group": groupname, **_described(row)})
    db.session.delete(row)
    db.session.flush()


# --- per-plan attributes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRadius:
    """What a plan's RADIUS group sends: the rate derived from its speeds (unless overridden) and its extras."""

    group: str
    derived_rate: str
    rate_overridden: bool
    attributes: list[PlanAttribute]


def derived_rate_limit(upload_mbps: int, download_mbps: int) -> str:
    """MikroTik's rate from a plan's speeds: rx/tx from the router's side, so the customer's upload first."""
    return f"{upload_mbps}M/{download_mbps}M"


def plan_radius(plan_id: int) -> PlanRadius:
    """The plan's RADIUS group as the radgroupreply/radgroupcheck views build it."""
    plan = get_plan(plan_id)
    rows = list(db.session.scalars(select(PlanAttribute).where(PlanAttribute.plan_id == plan.id)
                                   .order_by(PlanAttribute.kind.desc(), PlanAttribute.attribute)))
    overridden = any(r.kind == "reply" and r.attribute == RATE_LIMIT for r in rows)
    return PlanRadius(f"plan-{plan.code}", derived_rate_limit(plan.upload_mbps, plan.download_mbps), overridden,
                      rows)


def _plan_row(plan_id: int, kind: str, attribute: str) -> PlanAttribute | None:
    return db.session.scalar(select(PlanAttribute).where(
        PlanAttribute.plan_id == plan_id, PlanAttribute.kind == kind,
        func.lower(PlanAttribute.attribute) == attribute.lower()))


def add_plan_attribute(plan_id: int, kind: str, attribute, op, value) -> PlanAttribute:
    """Add a RADIUS attribute to a plan's group (audited on the plan); applies at each customer's next login."""
    plan = get_plan(plan_id)
    attribute, op, value = check_attribute(kind, attribute, op, value)
    if _plan_row(plan.id, kind, attribute):
        raise Conflict("This plan already has that attribute; remove it first to change it.",
                       {"attribute": "Already set on this plan."})
    row = PlanAttribute(plan_id=plan.id, kind=kind, attribute=attribute, op=op, value=value)
    db.session.add(row)
    _flush_guarding("This plan already has that attribute.")
    audit.record("plan.radius_attribute_add", plan, after=_described(row))
    return row


def remove_plan_attribute(plan_id: int, kind: str, attribute: str) -> None:
    """Remove a RADIUS attribute from a plan's group (audited on the plan)."""
    plan = get_plan(plan_id)
    row = _plan_row(plan.id, kind, str(attribute or ""))
    if row is None:
        raise NotFound("This plan has no such attribute.")
    audit.record("plan.radius_attribute_remove", plan, before=_described(row))
    db.session.delete(row)
    db.session.flush()

"""Routers (NAS): the BRAS/NAS list FreeRADIUS reads as its clients and the CoA outbox sends to.

The shared secret is written here and read only by FreeRADIUS and the CoA sender: no function returns it, and no
audit event holds it (an update records only that it changed).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import BusinessRuleViolation, Conflict, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import CoaRequest, Nas
from isp_admin.models.network import NAS_TYPES
from isp_admin.services.platform import audit

DEFAULT_COA_PORT = 3799  # RFC 5176's port, and RouterOS's default for `/radius incoming`
# Printable ASCII without spaces: it is typed into RouterOS and clients.conf, where a space needs quoting and a
# trailing one is invisible. 8 characters at least; RFC 2865 §3 asks for 16 or more, so the page suggests that.
_SECRET = re.compile(r"^[\x21-\x7e]{8,64}$")
RULE_FOR_SHARED_KEY = "8 to 64 printable ASCII characters, without spaces (16 or more is better)."
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HIDDEN = ("secret", "created_at", "updated_at", "ports", "server", "community")
FIX = "Please correct the highlighted fields."


@dataclass(frozen=True)
class Router:
    """A router as the pages show it: everything but its secret."""

    id: int
    nasname: str
    shortname: str
    type: str
    coa_port: int
    description: str | None
    secret_set: bool
    pending_requests: int


def _router(nas: Nas, pending: int = 0) -> Router:
    return Router(nas.id, nas.nasname, nas.shortname, nas.type, nas.coa_port, nas.description, bool(nas.secret),
                  pending)


def _pending_counts() -> dict[int, int]:
    return dict(db.session.execute(select(CoaRequest.nas_id, func.count()).where(
        CoaRequest.status == "pending", CoaRequest.nas_id.is_not(None)).group_by(CoaRequest.nas_id)).all())


def list_routers() -> list[Router]:
    """Every router by name, with how many Disconnect/CoA requests to it are waiting (two queries)."""
    pending = _pending_counts()
    return [_router(n, pending.get(n.id, 0))
            for n in db.session.scalars(select(Nas).order_by(Nas.shortname, Nas.nasname))]


def _load(nas_id: int) -> Nas:
    nas = db.session.get(Nas, nas_id)
    if nas is None:
        raise NotFound("No such router.")
    return nas


def get_router(nas_id: int) -> Router:
    """One router, without its secret, or NotFound."""
    nas = _load(nas_id)
    return _router(nas, _pending_counts().get(nas.id, 0))


def normalise_address(value) -> str:
    """The router's address as PostgreSQL's inet prints it (radacct's NAS-IP-Address is matched against it)."""
    try:
        address = ipaddress.ip_address(str(value or "").strip())
    except ValueError:
        raise Invalid(FIX, {"nasname": "An IPv4 or IPv6 address, e.g. 192.0.2.1."}) from None
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped  # ::ffff:192.0.2.1 is the router 192.0.2.1: one row, not two
    if address.version == 6 and address.scope_id:
        raise Invalid(FIX, {"nasname": "An address without a %zone."})
    if address.is_unspecified or address.is_multicast or str(address) == "255.255.255.255":
        raise Invalid(FIX, {"nasname": "The address of one router, not a wildcard, multicast or broadcast."})
    return str(address)


def _text(value, field: str, limit: int, errors: dict, required: bool = True) -> str | None:
    value = str(value or "").strip()
    if not value:
        if required:
            errors[field] = "Required."
        return None
    if len(value) > limit:
        errors[field] = f"At most {limit} characters."
    elif _CONTROL.search(value):
        errors[field] = "One line of text, without control characters."
    return value


def _validate(values: dict, *, creating: bool) -> dict:
    errors: dict[str, str] = {}
    clean: dict = {}
    try:
        clean["nasname"] = normalise_address(values.get("nasname"))
    except Invalid as exc:
        errors.update(exc.details)
    clean["shortname"] = _text(values.get("shortname"), "shortname", 32, errors)
    clean["description"] = _text(values.get("description"), "description", 200, errors, required=False)
    clean["type"] = values.get("type") or "mikrotik"
    if clean["type"] not in NAS_TYPES:
        errors["type"] = f"One of {', '.join(NAS_TYPES)}."
    port = values.get("coa_port", DEFAULT_COA_PORT)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        errors["coa_port"] = "A UDP port from 1 to 65535 (usually 3799)."
    clean["coa_port"] = port
    secret = values.get("secret")
    if secret or creating:  # on an edit, an empty secret keeps the one stored
        if not isinstance(secret, str) or not _SECRET.match(secret):
            errors["secret"] = RULE_FOR_SHARED_KEY
        clean["secret"] = secret
    if errors:
        raise Invalid(FIX, errors)
    return clean


def _ensure_free(nasname: str, nas_id: int | None = None) -> None:
    if db.session.scalar(select(Nas.id).where(Nas.nasname == nasname, Nas.id != (nas_id or 0))):
        raise Conflict("Another router already has this address.", {"nasname": "Already in the list."})


def _flush_guarding_address() -> None:
    # The unique constraint is the real guard: two staff adding the same router at once end here, not in a 500
    # (the address check above passed for both). The unit of work rolls the refused write back.
    try:
        db.session.flush()
    except IntegrityError:
        raise Conflict("Another router already has this address.", {"nasname": "Already in the list."}) from None


def _public(nas: Nas) -> dict:
    return audit.snapshot(nas, exclude=_HIDDEN)


def create_router(**values) -> Router:
    """Add a router (FreeRADIUS accepts requests from it once restarted; CoA uses it at once)."""
    clean = _validate(values, creating=True)
    _ensure_free(clean["nasname"])
    nas = Nas(**clean)
    db.session.add(nas)
    _flush_guarding_address()
    audit.record("nas.create", nas, after=_public(nas))
    return _router(nas)


def update_router(nas_id: int, **values) -> Router:
    """Edit a router; an empty `secret` keeps the stored one. Audited without the secret."""
    nas = _load(nas_id)
    clean = _validate(values, creating=False)
    _ensure_free(clean["nasname"], nas.id)
    before = _public(nas)
    secret_changed = "secret" in clean and clean["secret"] != nas.secret
    for key, value in clean.items():
        setattr(nas, key, value)
    _flush_guarding_address()
    old, new = audit.changes(before, _public(nas))
    if secret_changed:
        new["secret"] = "changed"  # noqa: S105  (that it changed, never what to)
    if new:
        audit.record("nas.update", nas, before=old, after=new)
    return _router(nas, _pending_counts().get(nas.id, 0))


def delete_router(nas_id: int) -> None:
    """Remove a router that no pending Disconnect/CoA request is waiting to reach."""
    nas = _load(nas_id)
    pending = _pending_counts().get(nas.id, 0)
    if pending:
        # Deleting it would fail them all ("the NAS was removed"). Answered and failed requests keep the router's
        # address; their nas_id is set null by the foreign key, and a retry finds a router re-added there.
        raise BusinessRuleViolation(f"{pending} Disconnect/CoA request(s) to this router are still pending. Wait "
                                    "until they are answered or failed (see the CoA outbox), then delete it.")
    audit.record("nas.delete", nas, before=_public(nas))
    db.session.delete(nas)
    db.session.flush()

"""The role matrix's vocabulary (Route, role sets) and its extensions: every module in this package adds its
feature's routes (ROUTES) and, when they need records, a `records(world) -> dict` of placeholder values, so
features add their cells without editing tests/web/test_roles.py."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field

ROLES = ("admin", "billing", "support", "readonly")
ANONYMOUS = "anonymous"
EVERYONE = frozenset(ROLES)
EDITORS = frozenset({"admin", "billing", "support"})
PLANNERS = frozenset({"admin", "billing"})
ADMINS = frozenset({"admin"})
OPERATORS = frozenset({"admin", "support"})  # network.operate: disconnect, retry or re-send a CoA
PUBLIC = None  # anonymous visitors too
NEW_PASSWORD = "a fresh passphrase for 2026"


@dataclass(frozen=True)
class Route:
    """One request: method, URL with <placeholders>, form data, who may send it, and the audit it writes."""

    method: str
    url: str
    allowed: frozenset[str] | None
    data: dict[str, str] = field(default_factory=dict)
    audit: str | None = None
    bearer: bool = False  # a JSON API route: sent with an API token of the role's read scope, not the session




def _modules():
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        yield importlib.import_module(f"{__name__}.{info.name}")


def extra_routes() -> list[Route]:
    """The routes every extension module declares."""
    return [route for module in _modules() for route in getattr(module, "ROUTES", [])]


def extra_records(world: dict) -> dict:
    """The placeholder values the extension modules' records add to the world."""
    values: dict = {}
    for module in _modules():
        records = getattr(module, "records", None)
        if records is not None:
            values.update(records(world))
    return values

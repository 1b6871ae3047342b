"""Which payment providers customers are offered: each shipped provider's readiness, and staff switching it on."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import BusinessRuleViolation, Invalid
from isp_admin.extensions import db
from isp_admin.models import PaymentProviderSetting
from isp_admin.services.payments.providers.registry import enabled_names, get_provider, names
from isp_admin.services.payments.refunds import can_refund
from isp_admin.services.platform import audit


@dataclass(frozen=True)
class ProviderStatus:
    """One provider as the settings page shows it; `missing` names config keys, never their values."""

    name: str
    label: str
    flow: str
    configured: bool
    missing: list[str]
    mode: str
    enabled: bool
    currency_problem: str | None
    refunds_by_api: bool

    @property
    def offered(self) -> bool:
        """Whether customers see it now (the same test as registry.offered)."""
        return self.enabled and self.configured and self.currency_problem is None


class _SettingsEntity:
    """What the audit log names for a provider setting: its table has the provider's name as key, not an id."""

    __tablename__ = "payment_provider_settings"
    id = None


def provider_statuses() -> list[ProviderStatus]:
    """Every shipped provider: configured (or which settings are missing), mode, enabled, currency support."""
    currency = current_app.config["CURRENCY"]
    switched_on = enabled_names()
    statuses = []
    for name in names():
        provider = get_provider(name)
        missing = provider.missing_settings()
        statuses.append(ProviderStatus(
            name=name, label=provider.label, flow=provider.flow, configured=not missing, missing=missing,
            mode=provider.mode(), enabled=name in switched_on, currency_problem=provider.unsupported_reason(currency),
            refunds_by_api=can_refund(name)))
    return statuses


def _setting_for_update(name: str) -> PaymentProviderSetting:
    setting = db.session.get(PaymentProviderSetting, name, with_for_update=True, populate_existing=True)
    if setting is not None:
        return setting
    try:
        with db.session.begin_nested():
            setting = PaymentProviderSetting(provider=name, enabled=False)
            db.session.add(setting)
    except IntegrityError:  # another admin's first switch inserted it a moment ago: lock theirs instead
        setting = db.session.get(PaymentProviderSetting, name, with_for_update=True, populate_existing=True)
    return setting


def set_enabled(name: str, enabled: bool) -> PaymentProviderSetting:
    """Offer a provider to customers, or stop; refuse one that lacks its settings or cannot take our currency."""
    if not isinstance(name, str) or name not in names():
        raise Invalid("No such payment provider.", {"provider": "Unknown provider."})
    provider = get_provider(name)
    if enabled:
        missing = provider.missing_settings()
        if missing:
            raise BusinessRuleViolation(f"{provider.label} cannot be enabled: set {', '.join(missing)} in the "
                                        "server's environment first.")
        problem = provider.unsupported_reason(current_app.config["CURRENCY"])
        if problem:
            raise BusinessRuleViolation(f"{provider.label} cannot be enabled: {problem}")
    # No money moves here, so no customer lock: the setting's row lock makes two admins' clicks apply in turn.
    setting = _setting_for_update(name)
    before = setting.enabled
    if before != enabled:
        setting.enabled, setting.updated_by = enabled, audit.current_actor().label
        audit.record("payment_provider.enable" if enabled else "payment_provider.disable", _SettingsEntity(),
                     before={"provider": name, "enabled": before}, after={"provider": name, "enabled": enabled})
    db.session.flush()
    return setting

"""The providers this product ships, by name, and which of them customers are offered."""
from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from isp_admin.errors import Invalid
from isp_admin.extensions import db
from isp_admin.models import PaymentProviderSetting
from isp_admin.services.payments.providers.base import Provider


def _classes() -> dict[str, type[Provider]]:
    from isp_admin.services.payments.providers.mpesa import MpesaProvider
    from isp_admin.services.payments.providers.stripe import StripeProvider

    return {cls.name: cls for cls in (StripeProvider, MpesaProvider)}


def names() -> list[str]:
    """Every provider's name, in display order."""
    return list(_classes())


def get_provider(name: str) -> Provider:
    """The named provider, configured from the app's config; Invalid for a name we do not ship."""
    cls = _classes().get(name)
    if cls is None:
        raise Invalid("No such payment provider.", {"provider": "Unknown provider."})
    return cls(current_app.config)


def enabled_names() -> set[str]:
    """Names staff switched on (the provider settings page)."""
    return set(db.session.scalars(select(PaymentProviderSetting.provider).where(PaymentProviderSetting.enabled)))


def offered() -> list[Provider]:
    """Providers a customer may pay with now: shipped, configured, enabled, and able to take our currency."""
    currency = current_app.config["CURRENCY"]
    switched_on = enabled_names()
    result = []
    for name in names():
        provider = get_provider(name)
        if name in switched_on and provider.configured() and provider.unsupported_reason(currency) is None:
            result.append(provider)
    return result

"""Stripe: a Checkout Session per payment (hosted card page); signed webhooks; status from the session."""
from __future__ import annotations

from isp_admin.services.payments.providers.base import Provider


class StripeProvider(Provider):
    """Cards through Stripe Checkout."""

    name = "stripe"
    label = "Card (Stripe)"
    method = "card"
    flow = "redirect"

    def missing_settings(self) -> list[str]:
        """STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET are required."""
        return [key for key in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET") if not self.config.get(key)]

    def mode(self) -> str:
        """Live keys start sk_live_ (or rk_live_); everything else is a test key."""
        key = self.config.get("STRIPE_SECRET_KEY") or ""
        return "live" if key.startswith(("sk_live_", "rk_live_")) else "sandbox"

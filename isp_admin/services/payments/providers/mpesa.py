"""M-Pesa (Safaricom Daraja): an STK push to the customer's phone; the result callback; the STK status query."""
from __future__ import annotations

from isp_admin.services.payments.providers.base import Provider

REQUIRED = ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_SHORTCODE", "MPESA_PASSKEY")


class MpesaProvider(Provider):
    """Mobile money through M-Pesa's Lipa na M-Pesa Online (STK push)."""

    name = "mpesa"
    label = "M-Pesa"
    method = "mobile_money"
    flow = "push"

    def missing_settings(self) -> list[str]:
        """Daraja's consumer key and secret, the shortcode and its passkey are required."""
        return [key for key in REQUIRED if not self.config.get(key)]

    def mode(self) -> str:
        """Daraja's sandbox host is sandbox.safaricom.co.ke; anything else (api.safaricom.co.ke) is live."""
        return "sandbox" if "sandbox" in self.config.get("MPESA_BASE_URL", "") else "live"

    def unsupported_reason(self, currency: str) -> str | None:
        """M-Pesa (Kenya) takes Kenyan shillings only."""
        return None if currency == "KES" else f"M-Pesa takes KES; the ledger is in {currency}."

    def payable_amount(self, amount_cents: int) -> int:
        """Daraja takes whole shillings: round up (the cents over become credit, never a shortfall)."""
        return -(-amount_cents // 100) * 100

"""The provider contract: start a payment, verify and read a notification, ask for a payment's status.

A provider knows nothing about invoices or the ledger: it turns our attempt into the provider's request and the
provider's messages into Notices. services/payments/events.py turns Notices into money, exactly once.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal

if TYPE_CHECKING:
    from isp_admin.models import Payment, PaymentAttempt

NoticeKind = Literal["succeeded", "failed", "pending", "refunded", "ignored"]


class ProviderError(Exception):
    """The provider refused or could not be reached; the message is safe to show staff and customers."""


class InvalidNotification(Exception):
    """A notification that is not the provider's (bad or old signature, wrong token, unreadable body): a 400."""


@dataclass(frozen=True)
class Started:
    """What starting a payment gave: the provider's reference and, for a hosted page, where to send the payer."""

    provider_ref: str
    redirect_url: str | None = None  # None for a push flow (the phone rings; we wait for the callback)
    message: str | None = None  # what to tell the payer meanwhile ("Check your phone")


@dataclass(frozen=True)
class Charge:
    """What a provider is asked to charge: the attempt's terms and whom they are for, read before the call.

    Plain values, not rows: start() makes its HTTP call with no database transaction open (launch_attempt ends it
    first), so a slow provider holds no transaction and no pooled connection while it answers.
    """

    public_id: str  # our attempt's public id: metadata, the idempotency key, the account reference at worst
    amount_cents: int
    currency: str
    phone: str | None = None  # the phone to push to (push flows)
    invoice_number: str | None = None  # the invoice paid; None for a top-up
    account_number: str | None = None  # the customer's
    email: str | None = None  # the customer's, for the provider's receipt


@dataclass(frozen=True)
class Notice:
    """One thing a provider told us about one payment, in our terms.

    `event_id` is the provider's id of the message (Stripe's evt_…), or for a callback or a status answer one we
    derive from the payment and its outcome, so that the same fact has the same id however it arrives: M-Pesa's
    success is stk:<CheckoutRequestID> from the callback and the status query alike, and a failure carries its
    result code, stk:<CheckoutRequestID>:<ResultCode> (another fact: money that lands after a failure is never
    taken for its replay); a Stripe status answer is status:<session id>:paid or :expired. `attempt_ref` and
    `public_id` find the attempt: the provider's reference we stored when starting, or our public id carried in
    metadata. Amounts are minor units.
    """

    event_id: str
    event_type: str
    kind: NoticeKind
    attempt_ref: str | None = None
    public_id: str | None = None
    amount_cents: int | None = None
    currency: str | None = None
    receipt: str | None = None  # the provider's payment reference (pi_…, an M-Pesa receipt number)
    refund_ref: str | None = None
    detail: str | None = None
    extra: dict = field(default_factory=dict)


class Provider:
    """Base class of a payment provider; subclasses fill in the four verbs."""

    name: ClassVar[str]  # stored in payments.provider and provider_events.provider
    label: ClassVar[str]  # what customers and staff see
    method: ClassVar[str]  # the payments.method of what it records (card, mobile_money)
    flow: ClassVar[Literal["redirect", "push"]]

    def __init__(self, config: dict):
        self.config = config

    def configured(self) -> bool:
        """Whether its secrets are in the config (without them it can be listed, never offered)."""
        return not self.missing_settings()

    def missing_settings(self) -> list[str]:
        """The config keys it needs and lacks."""
        raise NotImplementedError

    def mode(self) -> str:
        """'sandbox' or 'live', as its configuration says."""
        raise NotImplementedError

    def unsupported_reason(self, currency: str) -> str | None:
        """Why it cannot take payments in `currency`, or None."""
        return None

    def hosted_origins(self) -> tuple[str, ...]:
        """The origins of the provider's hosted pages (a redirect flow's form posts end there; CSP must allow them)."""
        return ()

    def payable_amount(self, amount_cents: int) -> int:
        """The amount it can actually charge for `amount_cents` (some providers take whole units only)."""
        return amount_cents

    def start(self, charge: Charge, *, return_url: str, cancel_url: str, callback_url: str,
              description: str) -> Started:
        """Create the payment at the provider (no database access); ProviderError if it refuses or is unreachable."""
        raise NotImplementedError

    def parse(self, body: bytes, headers: dict, *, token: str | None = None,
              attempt: PaymentAttempt | None = None) -> list[Notice]:
        """Verify a notification on its raw body and read it; raise InvalidNotification if it is not genuine."""
        raise NotImplementedError

    def query(self, attempt: PaymentAttempt) -> Notice | None:
        """Ask the provider where a pending attempt stands; None if it cannot say yet."""
        raise NotImplementedError

    def refund(self, payment: Payment, attempt: PaymentAttempt | None) -> str:
        """Refund a payment in full at the provider; return the provider's refund id (ProviderError if not)."""
        raise ProviderError(f"{self.label} refunds are made in its own dashboard; record the refund here.")

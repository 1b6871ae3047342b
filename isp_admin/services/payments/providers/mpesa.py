"""M-Pesa (Safaricom Daraja): an STK push to the customer's phone; the result callback; the STK status query."""
from __future__ import annotations

import base64
import json
import re
import threading
import time
from datetime import datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import requests

from isp_admin.errors import Invalid
from isp_admin.models import PaymentAttempt
from isp_admin.services.payments.providers.base import (
    Charge,
    InvalidNotification,
    Notice,
    Provider,
    ProviderError,
    Started,
)

REQUIRED = ("MPESA_CONSUMER_KEY", "MPESA_CONSUMER_SECRET", "MPESA_SHORTCODE", "MPESA_PASSKEY")
# Daraja's Timestamp (and so the Password) is Kenyan local time whatever zone the ISP bills in.
DARAJA_ZONE = ZoneInfo("Africa/Nairobi")
TOKEN_MARGIN = 60  # seconds: a token about to expire is renewed rather than sent and refused
REFERENCE_MAX, DESCRIPTION_MAX = 12, 13  # Daraja's limits on AccountReference and TransactionDesc
# The STK query answers HTTP 500 with this code, or ResultCode 4999, while the customer has not answered yet.
STILL_PROCESSING_ERROR = "500.001.1001"
STILL_PROCESSING_RESULT = "4999"
UNREACHABLE = "M-Pesa could not be reached; please try again in a few minutes."
_PHONE = re.compile(r"(?:\+?254|0)([17][0-9]{8})")  # ASCII digits: \d would take any script's
_SEPARATORS = re.compile(r"[ \-().]")
_DIGITS = re.compile(r"[0-9]{1,10}")

_tokens: dict[tuple[str, str], tuple[str, float]] = {}  # (base URL, consumer key) -> (token, monotonic expiry)
_tokens_lock = threading.Lock()


def normalise_phone(raw: str | None) -> str:
    """A Kenyan mobile number (07…, 01…, +2547…, 2547…) as Daraja wants it (2547XXXXXXXX); Invalid otherwise."""
    text = _SEPARATORS.sub("", raw or "") if raw is not None and len(raw) <= 40 else ""
    match = _PHONE.fullmatch(text)
    if match is None:
        raise Invalid("Please give a Kenyan mobile number.",
                      {"phone": "A Safaricom number such as 0712 345 678 or +254 712 345 678."})
    return "254" + match.group(1)


def forget_tokens() -> None:
    """Drop every cached access token (a changed consumer key, or a test that wants to see the OAuth call)."""
    with _tokens_lock:
        _tokens.clear()


def _clean(text: object, limit: int = 120) -> str:
    """Provider text fit to show a person: printable, one line, bounded."""
    return " ".join(re.sub(r"[^\x20-\x7e]", " ", str(text)[:1000]).split())[:limit]


def _reference(number: str) -> str:
    # INV-2026-000123 is too long for Daraja: the prefix goes first (the year and sequence stay readable).
    if len(number) > REFERENCE_MAX:
        number = re.sub(r"^[A-Za-z]+-", "", number)
    return number[-REFERENCE_MAX:]


def _account_reference(charge: Charge) -> tuple[str, str]:
    """What the customer's phone shows as the account (the invoice, else their account number)."""
    if charge.invoice_number:
        return _reference(charge.invoice_number), "Invoice"
    return _reference(charge.account_number or charge.public_id), "Account topup"


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

    # --- the three verbs -------------------------------------------------------------------------------------

    def start(self, charge: Charge, *, return_url: str, cancel_url: str, callback_url: str,
              description: str) -> Started:
        """Push the payment to the customer's phone; the result comes to `callback_url`."""
        try:
            phone = normalise_phone(charge.phone)
        except Invalid:
            raise ProviderError("That phone number is not an M-Pesa number.") from None
        timestamp, password = self._password()
        shortcode = str(self.config["MPESA_SHORTCODE"])
        reference, default_description = _account_reference(charge)
        description = _clean(description, 200)
        body = {
            "BusinessShortCode": shortcode, "Password": password, "Timestamp": timestamp,
            "TransactionType": "CustomerPayBillOnline", "Amount": self.payable_amount(charge.amount_cents) // 100,
            "PartyA": phone, "PartyB": shortcode, "PhoneNumber": phone, "CallBackURL": callback_url,
            "AccountReference": reference,
            "TransactionDesc": description if 0 < len(description) <= DESCRIPTION_MAX else default_description,
        }
        status, answer = self._call("/mpesa/stkpush/v1/processrequest", body)
        checkout_id = answer.get("CheckoutRequestID")
        if status != 200 or str(answer.get("ResponseCode")) != "0" or not isinstance(checkout_id, str):
            raise ProviderError(f"M-Pesa refused the payment: {self._why(answer)}")
        return Started(provider_ref=checkout_id, redirect_url=None,
                       message="Check your phone and enter your M-Pesa PIN to pay.")

    def parse(self, body: bytes, headers: dict, *, token: str | None = None,
              attempt: PaymentAttempt | None = None) -> list[Notice]:
        """Read an STK result callback (its URL's secret was checked by the edge, which found `attempt`)."""
        if attempt is None:
            raise InvalidNotification("M-Pesa results come to a payment's own callback URL")
        try:
            callback = json.loads(body)["Body"]["stkCallback"]
            checkout_id = callback["CheckoutRequestID"]
            code = _result_code(callback["ResultCode"])
        except (ValueError, TypeError, KeyError):
            raise InvalidNotification("not an M-Pesa STK result") from None
        if not isinstance(checkout_id, str) or not checkout_id or len(checkout_id) > 120:
            raise InvalidNotification("not an M-Pesa STK result")
        if attempt.provider_ref and checkout_id != attempt.provider_ref:
            raise InvalidNotification("this result is about another payment")
        common = {"event_type": "stk_callback", "attempt_ref": checkout_id, "public_id": attempt.public_id}
        if code != "0":
            return [Notice(event_id=_event_id(checkout_id, code), kind="failed",
                           detail=_clean(callback.get("ResultDesc") or f"M-Pesa result {code}", 300), **common)]
        items = _items(callback)
        amount, receipt = _amount_cents(items.get("Amount")), items.get("MpesaReceiptNumber")
        if not isinstance(receipt, str) or not receipt.strip():
            raise InvalidNotification("an M-Pesa success without its receipt number")
        return [Notice(event_id=_event_id(checkout_id, code), kind="succeeded", amount_cents=amount, currency="KES",
                       receipt=_clean(receipt, 40), detail=_clean(callback.get("ResultDesc") or "", 300) or None,
                       extra={"phone": str(items.get("PhoneNumber", ""))[:20],
                              "transaction_date": str(items.get("TransactionDate", ""))[:20]}, **common)]

    def query(self, attempt: PaymentAttempt) -> Notice | None:
        """Ask Daraja where an STK push stands; None while the customer has not answered."""
        if not attempt.provider_ref:
            return None
        timestamp, password = self._password()
        status, answer = self._call("/mpesa/stkpushquery/v1/query", {
            "BusinessShortCode": str(self.config["MPESA_SHORTCODE"]), "Password": password, "Timestamp": timestamp,
            "CheckoutRequestID": attempt.provider_ref})
        if str(answer.get("errorCode", "")).startswith(STILL_PROCESSING_ERROR):
            return None
        if status != 200 or "ResultCode" not in answer:
            raise ProviderError(f"M-Pesa did not answer the status query: {self._why(answer)}")
        try:
            code = _result_code(answer["ResultCode"])
        except (ValueError, TypeError):
            raise ProviderError("M-Pesa answered the status query with an unreadable result.") from None
        if code == STILL_PROCESSING_RESULT:
            return None
        common = {"event_type": "stk_query", "attempt_ref": attempt.provider_ref, "public_id": attempt.public_id}
        if code == "0":
            # No amount in a query answer: events.py takes the attempt's, which is what we pushed.
            return Notice(event_id=_event_id(attempt.provider_ref, code), kind="succeeded", **common)
        return Notice(event_id=_event_id(attempt.provider_ref, code), kind="failed",
                      detail=_clean(answer.get("ResultDesc") or f"M-Pesa result {code}", 300), **common)

    # --- HTTP ------------------------------------------------------------------------------------------------

    def _password(self) -> tuple[str, str]:
        timestamp = datetime.now(DARAJA_ZONE).strftime("%Y%m%d%H%M%S")
        raw = f"{self.config['MPESA_SHORTCODE']}{self.config['MPESA_PASSKEY']}{timestamp}"
        return timestamp, base64.b64encode(raw.encode()).decode()

    def _call(self, path: str, body: dict) -> tuple[int, dict]:
        """POST to Daraja with a bearer token (renewed once if refused); return the status and the JSON body."""
        base, timeout = self.config["MPESA_BASE_URL"].rstrip("/"), float(self.config["PAYMENTS_HTTP_TIMEOUT"])
        try:
            with requests.Session() as http:
                for renew in (False, True):
                    token = self._token(http, base, timeout, renew=renew)
                    response = http.post(base + path, json=body, timeout=timeout,
                                         headers={"Authorization": f"Bearer {token}"})
                    if response.status_code != 401:
                        break
                return response.status_code, _json(response)
        except requests.RequestException:
            raise ProviderError(UNREACHABLE) from None

    def _token(self, http: requests.Session, base: str, timeout: float, *, renew: bool) -> str:
        key = (base, str(self.config["MPESA_CONSUMER_KEY"]))
        with _tokens_lock:
            cached = _tokens.get(key)
        if cached and not renew and cached[1] > time.monotonic():
            return cached[0]
        response = http.get(base + "/oauth/v1/generate", params={"grant_type": "client_credentials"},
                            auth=(key[1], str(self.config["MPESA_CONSUMER_SECRET"])), timeout=timeout)
        answer = _json(response)
        token = answer.get("access_token")
        if response.status_code != 200 or not isinstance(token, str) or not token:
            raise ProviderError("M-Pesa refused our credentials; check MPESA_CONSUMER_KEY and "
                                "MPESA_CONSUMER_SECRET.")
        try:
            lifetime = int(answer.get("expires_in", 0))
        except (TypeError, ValueError):
            lifetime = 0
        with _tokens_lock:
            _tokens[key] = (token, time.monotonic() + max(lifetime - TOKEN_MARGIN, 0))
        return token

    @staticmethod
    def _why(answer: dict) -> str:
        reason = answer.get("errorMessage") or answer.get("ResponseDescription") or answer.get("ResultDesc")
        code = answer.get("errorCode") or answer.get("ResponseCode")
        text = _clean(reason) if reason else "no reason given"
        return f"{text} ({_clean(code, 30)})" if code else text


def _json(response: requests.Response) -> dict:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _result_code(value: object) -> str:
    """Daraja's ResultCode as a string of digits (a callback sends a number, the query a string)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError("ResultCode")
    text = str(value).strip()
    if not _DIGITS.fullmatch(text):
        raise ValueError("ResultCode")
    return str(int(text))


def _event_id(checkout_id: str, code: str) -> str:
    # A success is one event whether the callback or the poll reports it first. A failure is another fact, so a
    # success that comes after a failure (late money) is never taken for a replay of it.
    return f"stk:{checkout_id}" if code == "0" else f"stk:{checkout_id}:{code}"


def _items(callback: dict) -> dict:
    try:
        items = callback["CallbackMetadata"]["Item"]
        return {item["Name"]: item.get("Value") for item in items if isinstance(item, dict) and "Name" in item}
    except (KeyError, TypeError):
        raise InvalidNotification("an M-Pesa success without its details") from None


def _amount_cents(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidNotification("an M-Pesa success without its amount")
    try:
        cents = Decimal(str(value)) * 100
    except InvalidOperation:
        raise InvalidNotification("an M-Pesa success without its amount") from None
    if not cents.is_finite() or cents <= 0 or cents != cents.to_integral_value() or cents > 10**13:
        raise InvalidNotification("an M-Pesa success with an impossible amount")
    return int(cents)

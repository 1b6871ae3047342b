"""Money as integer minor units: parsing from what staff type, and formatting for display."""
from __future__ import annotations

import re
from decimal import Decimal

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "KES": "KSh ", "NGN": "₦", "INR": "₹", "BRL": "R$", "ZAR": "R "}
_AMOUNT = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d*)(?:\.\d*)?", re.ASCII)


def parse_money(text: str) -> int:
    """Parse '1,234.50' into 123450 cents; raise ValueError for anything else."""
    raw = (text or "").strip()
    # Plain ASCII digits with optional thousands commas in their places: '1,23' is refused, not read as 123,
    # and exponents ('1e3'), underscores and non-ASCII digits, which Decimal would accept, are refused too.
    if not _AMOUNT.fullmatch(raw) or not any(ch.isdigit() for ch in raw):
        raise ValueError("Enter an amount such as 29.99.")
    amount = Decimal(raw.replace(",", ""))
    if amount < 0:
        raise ValueError("The amount cannot be negative.")
    if amount >= Decimal("10000000"):  # below 2^31 cents, the range of the plan price columns
        raise ValueError("The amount is too large.")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError("Use at most two decimal places.")
    return int(amount * 100)


def format_cents(cents: int | None, currency: str = "USD") -> str:
    """Format integer cents as '$1,234.50' without ever going through float."""
    if cents is None:
        return ""
    sign = "-" if cents < 0 else ""
    units, minor = divmod(abs(int(cents)), 100)
    symbol = SYMBOLS.get(currency)
    amount = f"{units:,}.{minor:02d}"
    return f"{sign}{symbol}{amount}" if symbol else f"{sign}{amount} {currency}"


def cents_to_input(cents: int | None) -> str:
    """Render cents for an input box ('29.99')."""
    if cents is None:
        return ""
    sign = "-" if cents < 0 else ""
    units, minor = divmod(abs(int(cents)), 100)
    return f"{sign}{units}.{minor:02d}"

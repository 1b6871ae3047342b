"""Money as integer minor units: parsing from what staff type, and formatting for display."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

SYMBOLS = {"USD": "$", "EUR": "€", "GBP": "£", "KES": "KSh ", "NGN": "₦", "INR": "₹", "BRL": "R$", "ZAR": "R "}


def parse_money(text: str) -> int:
    """Parse '1,234.50' into 123450 cents; raise ValueError for anything else."""
    cleaned = (text or "").strip().replace(",", "")
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError("Enter an amount such as 29.99.") from None
    if not amount.is_finite():
        raise ValueError("Enter an amount such as 29.99.")
    if amount != amount.quantize(Decimal("0.01")):
        raise ValueError("Use at most two decimal places.")
    if amount < 0:
        raise ValueError("The amount cannot be negative.")
    if amount >= Decimal("100000000"):
        raise ValueError("The amount is too large.")
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
    units, minor = divmod(int(cents), 100)
    return f"{units}.{minor:02d}"

"""Building CSV files for the import tests."""
from __future__ import annotations

import csv
import io

CUSTOMER_HEADER = ["account_number", "name", "email", "phone", "service_address", "plan", "pppoe_username",
                   "static_ip", "start_date", "billed_from", "billing_day", "price", "status"]
PAYMENT_HEADER = ["date", "amount", "reference", "account_number", "invoice_number"]


def csv_bytes(header: list[str], rows: list[dict], *, delimiter: str = ",", bom: bool = False) -> bytes:
    """A CSV file (UTF-8) with `header` and `rows` (missing cells empty)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, delimiter=delimiter, lineterminator="\r\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return ("\ufeff" if bom else "").encode() + out.getvalue().encode()


def customer(n: int, **cells) -> dict:
    """A customer row with a subscription on PLAN-A, numbered `n`."""
    return {"name": f"Imported Customer {n}", "email": f"imported{n}@mail.example", "phone": f"+254 711 {n:06d}",
            "service_address": f"{n} Import Road", "plan": "HOME-50", "pppoe_username": f"import{n}",
            "start_date": "2026-07-01", **cells}

"""Role cells for CSV imports: customers (customer editors) and payments (billing), upload, preview, apply."""
from __future__ import annotations

from isp_admin.extensions import db
from isp_admin.models import Customer
from isp_admin.services.imports import uploads
from isp_admin.services.platform.clock import today
from tests.web.roles import EDITORS, PLANNERS, Route

ROUTES = [
    Route("GET", "/imports/", EDITORS),
    # No file: allowed roles see the form again with its error; support may not even try a payments file.
    Route("POST", "/imports/", EDITORS, {"kind": "customers"}),
    Route("POST", "/imports/", PLANNERS, {"kind": "payments"}),
    Route("GET", "/imports/<customers_import>", EDITORS),
    Route("GET", "/imports/<payments_import>", PLANNERS),
    Route("POST", "/imports/<customers_import>/apply", EDITORS, audit="import.apply"),
    Route("POST", "/imports/<payments_import>/apply", PLANNERS, audit="import.apply"),
    Route("GET", "/imports/templates/customers.csv", EDITORS),
    Route("GET", "/imports/templates/payments.csv", PLANNERS),
]


def records(world: dict) -> dict:
    """A checked customers file (one new customer) and a checked bank statement (a payment by the world's customer)."""
    account = db.session.get(Customer, world["customer"]).account_number
    customers = uploads.upload("customers", "peer.csv", b"name,email\nMatrix Import,matrix.import@mail.example\n")
    payments = uploads.upload("payments", "bank.csv",
                              f"date,amount,account_number\n{today().isoformat()},5.00,{account}\n".encode())
    assert customers.error_count == payments.error_count == 0, (customers.report, payments.report)
    db.session.commit()
    return {"customers_import": customers.id, "payments_import": payments.id}

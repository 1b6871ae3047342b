"""CSV imports on SQLite, as `make run` serves them: preview in a rolled-back savepoint, apply, the hash guard."""
from __future__ import annotations

import io

import pytest
from flask_migrate import upgrade
from sqlalchemy import func, select

from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CsvImport, Customer, Payment, Subscription
from tests.conftest import ROOT, FreshContextClient, app_config
from tests.factories import PASSWORD, PlanFactory, UserFactory
from tests.services.imports.helpers import CUSTOMER_HEADER, csv_bytes, customer


@pytest.fixture
def sqlite_client(tmp_path):
    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance"))
    app.test_client_class = FreshContextClient
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        UserFactory(email="desk@isp.example", role="billing")
        PlanFactory(code="HOME-50")
        client = app.test_client()
        assert client.post("/login", data={"email": "desk@isp.example", "password": PASSWORD}).status_code == 302
        yield client
        db.session.remove()
        db.engine.dispose()


def post(client, kind: str, content: bytes) -> str:
    response = client.post("/imports/", content_type="multipart/form-data", data={
        "kind": kind, "date_format": "iso", "file": (io.BytesIO(content), f"{kind}.csv", "text/csv")})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return response.headers["Location"]


def count(model) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model))


def test_customers_then_their_payments_are_imported_on_sqlite(sqlite_client):
    rows = [customer(1, account_number="S-1"), customer(2, account_number="S-2", status="suspended"),
            customer(3, account_number="S-1", name="", email="", phone="", service_address="",
                     pppoe_username="import3")]
    detail = post(sqlite_client, "customers", csv_bytes(CUSTOMER_HEADER, rows))
    assert "every row passes" in sqlite_client.get(detail).get_data(as_text=True)
    assert count(Customer) == 0 and count(Subscription) == 0 and count(AuditEvent) == 1  # the sign-in

    sqlite_client.post(f"{detail}/apply")
    assert count(Customer) == 2 and count(Subscription) == 3
    assert db.session.scalar(select(Subscription.status).where(Subscription.pppoe_username == "import2")) == \
        "suspended"

    again = post(sqlite_client, "customers", csv_bytes(CUSTOMER_HEADER, rows))
    page = sqlite_client.get(again).get_data(as_text=True)
    assert "already exists" in page and count(Customer) == 2  # the account numbers are taken now

    statement = b"date,amount,reference,account_number\n2026-11-02,15.00,TRF 1,S-1\n2026-11-03,1.5,TRF 2,S-2\n"
    paid = post(sqlite_client, "payments", statement)
    sqlite_client.post(f"{paid}/apply")
    assert [p.amount_cents for p in db.session.scalars(select(Payment).order_by(Payment.id))] == [1500, 150]
    assert db.session.scalar(select(func.count()).where(CsvImport.status == "applied")) == 2

    repeat = post(sqlite_client, "payments", statement)
    sqlite_client.post(f"{repeat}/apply")
    assert "applied before" in sqlite_client.get(repeat).get_data(as_text=True)
    sqlite_client.post(f"{repeat}/apply", data={"confirm_repeat": "y"})
    assert count(Payment) == 2  # confirmed, yet each line is recognised as recorded already

"""A customer's statement dates a reversal on the day it happened, on PostgreSQL and on SQLite (`make run`).

SQLite read CAST(reversed_at AS DATE) as the integer year (2026), which sorted before every date: each reversal
landed in the opening balance (a phantom debt dated a year before the customer existed) and never in the rows.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from flask_migrate import upgrade

from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.services.billing import payments, queries
from isp_admin.services.platform.clock import today
from tests.conftest import ROOT, app_config
from tests.factories import CustomerFactory


@pytest.fixture
def sqlite_app(tmp_path):
    """The embedded default: a migrated SQLite file, no Redis."""
    app = create_app(app_config(f"sqlite:///{tmp_path}/isp.sqlite3", None, tmp_path / "instance"))
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        yield app
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request):
    """Run the test on this worker's PostgreSQL (the `app` fixture) and on SQLite."""
    return request.getfixturevalue("app" if request.param == "postgresql" else "sqlite_app")


def test_a_reversal_is_a_dated_row_of_the_statement_not_an_opening_balance(backend):
    day = today()
    customer = CustomerFactory()
    kept, _ = payments.record_payment(customer.id, 5000, "cash", day, day)
    bounced, _ = payments.record_payment(customer.id, 2000, "bank_transfer", day, day, reference="TRX-1")
    payments.reverse_payment(bounced.id, "Bounced", day)
    db.session.commit()

    statement = queries.statement(customer.id, day - timedelta(days=30), day)

    assert statement.opening_cents == 0
    assert [(row["kind"], row["id"], row["amount_cents"]) for row in statement.rows] == [
        ("payment", kept.id, -5000), ("payment", bounced.id, -2000), ("reversal", bounced.id, 2000)]
    assert statement.rows[-1]["day"] == day
    assert statement.closing_cents == -5000


def test_a_reversal_before_the_range_is_in_the_opening_balance(backend):
    day = today()
    customer = CustomerFactory()
    bounced, _ = payments.record_payment(customer.id, 2000, "cash", day - timedelta(days=3), day)
    payments.reverse_payment(bounced.id, "Bounced", day)
    db.session.commit()

    after = queries.statement(customer.id, day + timedelta(days=1), day + timedelta(days=2))
    on_the_day = queries.statement(customer.id, day, day)

    assert after.opening_cents == 0 and after.rows == []  # paid, then reversed: nothing owed either way
    assert on_the_day.opening_cents == -2000
    assert [row["kind"] for row in on_the_day.rows] == ["reversal"]

"""Two applies at once: one wins, the other is a clean conflict, and the rows exist once (PostgreSQL row locks and
the partial unique index on an applied file's hash)."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from isp_admin.errors import Conflict
from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Customer
from isp_admin.services.imports import uploads
from tests.conftest import is_postgres
from tests.factories import PlanFactory
from tests.services.imports.helpers import CUSTOMER_HEADER, csv_bytes, customer
from tests.support.threads import in_threads


@pytest.fixture
def content(app):
    if not is_postgres():
        pytest.skip("row locks and a concurrent unique check need PostgreSQL")
    PlanFactory(code="HOME-50")
    return csv_bytes(CUSTOMER_HEADER, [customer(i, account_number="") for i in range(20)])


def _outcome(results) -> list[str]:
    return sorted("applied" if getattr(r, "applied", False) else type(r).__name__ for r in results)


def test_the_same_import_applied_twice_at_once_is_applied_once(app, content):
    imp_id = uploads.upload("customers", "race.csv", content).id
    db.session.commit()
    results = in_threads(app, lambda: uploads.apply(imp_id), lambda: uploads.apply(imp_id))
    assert _outcome(results) == ["Conflict", "applied"]
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 20
    assert db.session.scalar(select(func.count()).where(AuditEvent.action == "import.apply")) == 1


def test_two_uploads_of_one_file_applied_at_once_are_applied_once(app, content):
    first = uploads.upload("customers", "race.csv", content).id
    second = uploads.upload("customers", "race-again.csv", content).id
    db.session.commit()
    results = in_threads(app, lambda: uploads.apply(first), lambda: uploads.apply(second))
    assert _outcome(results) == ["Conflict", "applied"]
    loser = next(r for r in results if isinstance(r, Conflict))
    assert "applied" in loser.message
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 20

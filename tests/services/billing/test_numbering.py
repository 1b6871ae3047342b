"""Document numbers: gapless and unique per prefix and year, even with concurrent issuers and rollbacks."""
from __future__ import annotations

import threading
from datetime import date

import pytest
from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import CreditNote, DocumentSequence, Invoice
from isp_admin.services.billing import invoices
from isp_admin.services.billing.numbering import allocate_numbers
from tests.conftest import is_postgres
from tests.factories import CustomerFactory

LINE = {"description": "Router", "quantity": 1, "unit_price_cents": 1000, "tax_rate_bp": 1600}


def draft(customer_id: int) -> int:
    return invoices.create_draft(customer_id, [LINE], date(2026, 5, 2)).id


def test_numbers_are_consecutive_per_prefix_and_year(app):
    assert allocate_numbers("INV", 2026, 3) == ["INV-2026-000001", "INV-2026-000002", "INV-2026-000003"]
    assert allocate_numbers("INV", 2026, 1) == ["INV-2026-000004"]
    assert allocate_numbers("CN", 2026, 2) == ["CN-2026-000001", "CN-2026-000002"]
    assert allocate_numbers("INV", 2027, 1) == ["INV-2027-000001"]
    assert allocate_numbers("INV", 2026, 0) == []
    assert allocate_numbers("INV", 2026, 1) == ["INV-2026-000005"]


def test_a_rolled_back_transaction_gives_its_numbers_back(app):
    allocate_numbers("INV", 2026, 2)
    db.session.commit()
    allocate_numbers("INV", 2026, 5)
    db.session.rollback()

    assert allocate_numbers("INV", 2026, 1) == ["INV-2026-000003"]


def test_issuing_numbers_drafts_and_the_year_rolls_over(app):
    customer = CustomerFactory()
    ids = [draft(customer.id) for _ in range(3)]

    invoices.issue(ids[0], date(2026, 12, 30))
    invoices.issue(ids[1], date(2026, 12, 31))
    invoices.issue(ids[2], date(2027, 1, 1))
    db.session.commit()

    numbers = [db.session.get(Invoice, i).number for i in ids]
    assert numbers == ["INV-2026-000001", "INV-2026-000002", "INV-2027-000001"]


def test_credit_notes_have_their_own_sequence(app):
    customer = CustomerFactory()
    ids = [draft(customer.id) for _ in range(2)]
    for invoice_id in ids:
        invoices.issue(invoice_id, date(2026, 5, 2))

    notes = [invoices.void(invoice_id, "Wrong customer", date(2026, 5, 3)) for invoice_id in ids]
    third = invoices.issue(draft(customer.id), date(2026, 5, 3))
    db.session.commit()

    assert [n.number for n in notes] == ["CN-2026-000001", "CN-2026-000002"]
    assert third.number == "INV-2026-000003"
    assert sorted(db.session.scalars(select(CreditNote.number))) == ["CN-2026-000001", "CN-2026-000002"]


def test_concurrent_issuers_with_rollbacks_leave_no_gap_and_no_duplicate(app):
    if not is_postgres():
        pytest.skip("concurrent writers need PostgreSQL")
    per_thread, threads_n = 6, 8
    customers = [CustomerFactory() for _ in range(threads_n)]
    drafts = {c.id: [draft(c.id) for _ in range(per_thread)] for c in customers}
    db.session.commit()
    db.session.remove()
    barrier = threading.Barrier(threads_n)
    committed: list[int] = []
    rolled_back: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def issuer(index: int, draft_ids: list[int]) -> None:
        with app.app_context():
            try:
                barrier.wait(timeout=10)
                for n, invoice_id in enumerate(draft_ids):
                    invoices.issue(invoice_id, date(2026, 6, 1))
                    # Every third transaction fails after taking its number (a crash, a bad line...).
                    if (index + n) % 3 == 0:
                        db.session.rollback()
                        with lock:
                            rolled_back.append(invoice_id)
                    else:
                        db.session.commit()
                        with lock:
                            committed.append(invoice_id)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                db.session.rollback()
                errors.append(exc)

    threads = [threading.Thread(target=issuer, args=(i, ids)) for i, ids in enumerate(drafts.values())]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == [] and not any(t.is_alive() for t in threads)
    db.session.expire_all()
    numbers = list(db.session.scalars(select(Invoice.number).where(Invoice.number.is_not(None))))
    assert sorted(numbers) == [f"INV-2026-{n:06d}" for n in range(1, len(committed) + 1)]
    assert len(committed) == threads_n * per_thread - len(rolled_back) and rolled_back
    still_drafts = set(db.session.scalars(select(Invoice.id).where(Invoice.status == "draft")))
    assert still_drafts == set(rolled_back)
    sequence = db.session.get(DocumentSequence, ("INV", 2026))
    assert sequence.last_number == len(committed)

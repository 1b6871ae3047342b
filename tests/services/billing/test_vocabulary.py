"""The billing vocabulary lives in one place: an invoice's balance and open statuses on the model, and the audit
trail's bulk writer in audit.record_many; nothing under isp_admin/ spells them out again."""
from __future__ import annotations

import ast
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, Invoice
from isp_admin.models.invoices import OPEN_STATUSES, invoice_balance
from isp_admin.services.platform import audit
from tests.factories import CustomerFactory

D = date
PACKAGE = Path(__file__).resolve().parents[3] / "isp_admin"
MODEL_MODULE = PACKAGE / "models" / "invoices.py"
SETTLED = datetime(2026, 3, 10, 12, tzinfo=UTC)
# (status, total, paid, credit): untouched, part paid, part paid and part credited, settled by credit, overdue.
BOOKS = [("open", 10000, 0, 0), ("open", 10000, 2500, 0), ("overdue", 10000, 3000, 2000),
         ("paid", 4000, 1000, 3000), ("overdue", 6000, 1000, 500), ("void", 2000, 0, 2000)]


@pytest.fixture
def invoices(app):
    """One customer's invoices with the amounts in BOOKS, written as issued rows and read back fresh."""
    customer = CustomerFactory()
    for n, (status, total, paid, credit) in enumerate(BOOKS, start=1):
        db.session.add(Invoice(
            number=f"INV-2026-{n:06d}", customer_id=customer.id, status=status, issue_date=D(2026, 3, 1),
            due_date=D(2026, 3, 15), currency=app.config["CURRENCY"], subtotal_cents=total, tax_cents=0,
            total_cents=total, amount_paid_cents=paid, credit_applied_cents=credit,
            paid_at=SETTLED if status == "paid" else None, voided_at=SETTLED if status == "void" else None))
    db.session.commit()
    db.session.expire_all()
    return list(db.session.scalars(select(Invoice).order_by(Invoice.id)))


# --- balance and open statuses on the model -----------------------------------------------------------------

def test_the_balance_on_an_invoice_is_what_remains_after_payments_and_credit(invoices):
    expected = [total - paid - credit for _, total, paid, credit in BOOKS]
    assert [i.balance_cents for i in invoices] == expected == [10000, 7500, 5000, 0, 4500, 0]
    assert [i.is_open for i in invoices] == [s in ("open", "overdue") for s, *_ in BOOKS]


def test_the_database_computes_the_same_balance_to_filter_sort_and_sum_by(invoices):
    by_id = {i.id: i.balance_cents for i in invoices}
    rows = db.session.execute(select(Invoice.id, Invoice.balance_cents)
                              .order_by(Invoice.balance_cents.desc(), Invoice.id)).all()
    assert [tuple(r) for r in rows] == sorted(by_id.items(), key=lambda kv: (-kv[1], kv[0]))
    owing = db.session.scalars(select(Invoice.id).where(Invoice.balance_cents > 4500).order_by(Invoice.id)).all()
    assert owing == [i for i, cents in sorted(by_id.items()) if cents > 4500]
    table = Invoice.__table__.c  # column-only selects spell it through the same helper
    assert db.session.scalar(select(func.sum(invoice_balance(table)))) == sum(by_id.values())


def test_open_statuses_select_the_same_invoices_in_python_and_in_sql(invoices):
    in_sql = db.session.scalars(select(Invoice.id).where(Invoice.is_open).order_by(Invoice.id)).all()
    assert in_sql == [i.id for i in invoices if i.status in OPEN_STATUSES] == [i.id for i in invoices if i.is_open]
    owed = db.session.scalar(select(func.sum(Invoice.balance_cents)).where(Invoice.is_open))
    assert owed == 10000 + 7500 + 5000 + 4500


# --- audit.record_many ----------------------------------------------------------------------------------------

@pytest.fixture
def writes(query_counter, monkeypatch):
    """Collect every statement sent, COPY included (it goes to psycopg's cursor below SQLAlchemy's events)."""
    from contextlib import contextmanager

    @contextmanager
    def counting():
        with query_counter() as statements:
            try:
                import psycopg
            except ImportError:  # SQLite only: bulk inserts are executemany, which the counter sees
                yield statements
                return
            real_copy = psycopg.Cursor.copy

            def copy(cursor, statement, *args, **kwargs):
                statements.append(str(statement))
                return real_copy(cursor, statement, *args, **kwargs)

            monkeypatch.setattr(psycopg.Cursor, "copy", copy)
            try:
                yield statements
            finally:
                monkeypatch.setattr(psycopg.Cursor, "copy", real_copy)

    return counting


def test_record_many_writes_one_event_per_row_for_the_acting_actor_in_one_statement(app, writes):
    actor = audit.Actor("user", 42, "ops@isp.example", "203.0.113.9")
    db.session.execute(select(1))  # the transaction is open before counting starts
    with audit.acting_as(actor), writes() as sent:
        audit.record_many("invoice.overdue", "invoices", [(11, 1), (12, 1), (13, 2, {"status": "own"})],
                          after={"status": "overdue"})
    assert len(sent) == 1 and "audit_events" in sent[0], sent
    db.session.commit()

    events = db.session.execute(select(
        AuditEvent.actor_type, AuditEvent.actor_id, AuditEvent.actor_label, AuditEvent.ip, AuditEvent.action,
        AuditEvent.entity_type, AuditEvent.entity_id, AuditEvent.customer_id, AuditEvent.before, AuditEvent.after,
    ).order_by(AuditEvent.entity_id)).all()
    who = ("user", 42, "ops@isp.example", "203.0.113.9", "invoice.overdue", "invoices")
    assert [tuple(e) for e in events] == [
        (*who, 11, 1, None, {"status": "overdue"}),
        (*who, 12, 1, None, {"status": "overdue"}),
        (*who, 13, 2, None, {"status": "own"}),
    ]
    assert db.session.scalar(select(func.count()).where(AuditEvent.at.is_(None))) == 0


def test_record_many_with_nothing_to_record_sends_nothing(app, writes):
    db.session.execute(select(1))
    with writes() as sent:
        audit.record_many("subscription.suspend", "subscriptions", [])
    assert sent == []


# --- nobody spells them out again ------------------------------------------------------------------------------

BALANCE_COLUMNS = {"total_cents", "amount_paid_cents", "credit_applied_cents"}
SQL_BALANCE = re.compile(r"total_cents\s*-\s*(\w+\.)?amount_paid_cents\s*-\s*(\w+\.)?credit_applied_cents", re.I)
SQL_OPEN = re.compile(r"IN\s*\(\s*'(open|overdue)'\s*,\s*'(open|overdue)'\s*\)", re.I)


def _leaves(node: ast.AST) -> list[str]:
    """The names of the columns an arithmetic expression adds and subtracts (a.b → 'b', c → 'c')."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        return _leaves(node.left) + _leaves(node.right)
    if isinstance(node, ast.Attribute):
        return [node.attr]
    if isinstance(node, ast.Name):
        return [node.id]
    return []


def respelled(source: str) -> list[str]:
    """Where `source` writes the balance arithmetic or the open-status pair itself instead of using the model's."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub) and BALANCE_COLUMNS.issubset(_leaves(node)):
            found.append(f"line {node.lineno}: balance arithmetic")
        if isinstance(node, ast.Tuple | ast.List | ast.Set) and node.elts and all(
                isinstance(e, ast.Constant) for e in node.elts) and {e.value for e in node.elts} == {"open", "overdue"}:
            found.append(f"line {node.lineno}: open statuses")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                SQL_BALANCE.search(node.value) or SQL_OPEN.search(node.value)):
            found.append(f"line {node.lineno}: in SQL text")
    # Each BinOp of a - b - c is walked twice (the whole and its left part): report a line once.
    return sorted(set(found))


@pytest.mark.parametrize("snippet", [
    "x = Invoice.total_cents - Invoice.amount_paid_cents - Invoice.credit_applied_cents",
    "x = i.total_cents - (i.amount_paid_cents + i.credit_applied_cents)",
    "x = invoice.total_cents - invoice.credit_applied_cents - invoice.amount_paid_cents",
    "q = Invoice.status.in_(('open', 'overdue'))",
    "ok = status not in {'overdue', 'open'}",
    "s = \"SELECT 1 FROM invoices i WHERE i.status IN ('open', 'overdue')\"",
    "s = 'SUM(i.total_cents - i.amount_paid_cents - i.credit_applied_cents)'",
])
def test_the_scan_recognises_each_spelling(snippet):
    assert respelled(snippet), snippet


def test_the_scan_leaves_other_sums_and_status_sets_alone():
    assert respelled("b = inv.total_cents - paid.get(inv.id, 0) - credited.get(inv.id, 0)\n"
                     "s = ('open', 'overdue', 'paid')\nq = Invoice.balance_cents > 0") == []


def test_no_module_spells_the_balance_or_the_open_statuses_again():
    modules = [p for p in PACKAGE.rglob("*.py") if p != MODEL_MODULE and "migrations" not in p.parts]
    assert len(modules) > 50  # the scan really walked the package
    found = {str(p.relative_to(PACKAGE.parent)): hits for p in modules if (hits := respelled(p.read_text()))}
    assert found == {}, "use Invoice.balance_cents / invoice_balance() and OPEN_STATUSES / Invoice.is_open"

"""The HTML edge commits in one place: an action is kept whole, or refused, rolled back whole and shown."""
from __future__ import annotations

import ast
from datetime import date
from pathlib import Path

import pytest
from flask import get_flashed_messages
from sqlalchemy import func, select, text
from wtforms import Form, StringField

import isp_admin.web
from isp_admin.errors import Conflict
from isp_admin.extensions import db
from isp_admin.models import Customer, Plan, User
from isp_admin.services.customers import accounts as customer_service
from isp_admin.services.customers import plans as plan_service
from isp_admin.services.customers import subscriptions as subscription_service
from isp_admin.services.identity import users as user_service
from isp_admin.web.unit_of_work import REFUSED, commit_once, perform
from tests.factories import PlanFactory, UserFactory

WEB = Path(isp_admin.web.__file__).parent
PACKAGE = WEB.parent
UNIT_OF_WORK = PACKAGE / "unit_of_work.py"
FIBRE = dict(code="FIBRE-100", name="Fibre 100", download_mbps=100, upload_mbps=50, monthly_price_cents=4999)


def commit_references(source: str) -> list[int]:
    """Return the lines of `source` that touch anything's `.commit` (a call, or an alias taken to call later)."""
    return sorted(node.lineno for node in ast.walk(ast.parse(source))
                  if isinstance(node, ast.Attribute) and node.attr == "commit")


def test_nothing_commits_outside_the_unit_of_work():
    # Views, API views, jobs, commands and services alike: the edges commit through isp_admin/unit_of_work.py.
    offenders = [f"{path.relative_to(PACKAGE.parent)}:{line}"
                 for path in sorted(PACKAGE.rglob("*.py")) if path != UNIT_OF_WORK
                 for line in commit_references(path.read_text())]
    assert offenders == [], "edges commit through isp_admin/unit_of_work.py, never by hand"


def test_the_guard_sees_a_commit_by_hand_however_it_is_written():
    assert commit_references("db.session.commit()\n") == [1]
    assert commit_references("s = db.session\nsave = s.commit\nsave()\n") == [2]
    assert commit_references("from isp_admin.extensions import db\n\ndb.session.flush()\n") == []
    assert commit_references(UNIT_OF_WORK.read_text()), "the one commit point is where the guard expects it"


def committed(sql: str) -> int:
    """Count rows as another connection sees them: only what was committed."""
    with db.engine.connect() as other:
        return other.scalar(text(sql))


class CodeForm(Form):
    code = StringField()


def test_a_kept_action_is_committed_once_and_its_result_returned(app):
    with app.test_request_context():
        plan = perform(plan_service.create_plan, **FIBRE)
        assert isinstance(plan, Plan) and plan.code == "FIBRE-100"
        assert get_flashed_messages() == []
    assert committed("SELECT count(*) FROM plans WHERE code = 'FIBRE-100'") == 1


def test_a_refusal_is_rolled_back_and_shown_on_the_form(app):
    PlanFactory(code="FIBRE-100")
    with app.test_request_context():
        form = CodeForm()
        assert perform(plan_service.create_plan, **FIBRE, form=form) is REFUSED
        assert form.code.errors == ["Already in use."]
        assert get_flashed_messages(with_categories=True) == [("danger", "Another plan already uses this code.")]
    assert db.session.scalar(select(func.count()).select_from(Plan)) == 1


def test_a_refusal_without_a_form_is_flashed_in_the_views_words(app):
    PlanFactory(code="FIBRE-100")
    with app.test_request_context():
        assert perform(plan_service.create_plan, **FIBRE, failure="Not created: {}") is REFUSED
        assert get_flashed_messages(with_categories=True) == [
            ("danger", "Not created: Another plan already uses this code.")]


def test_a_service_that_flushed_before_it_was_refused_leaves_nothing_behind(app, query_counter):
    admin = UserFactory(role="admin", email="only-admin@isp.example")
    with app.test_request_context(), query_counter() as statements:
        # Demoting the only admin: the role is flushed (autoflush before the check's query), then refused.
        outcome = perform(user_service.update_user, admin.id, acting_user_id=None, role="billing")
    assert outcome is REFUSED
    assert any(s.lstrip().upper().startswith("UPDATE USERS") for s in statements), "the service flushed first"
    assert db.session.scalar(select(User.role).where(User.id == admin.id)) == "admin"
    assert committed(f"SELECT count(*) FROM users WHERE id = {admin.id} AND role = 'admin'") == 1


def test_a_row_flushed_before_the_refusal_is_absent_afterwards(app):
    retired = PlanFactory(active=False)

    def open_account_with_retired_plan():
        customer = customer_service.create_customer(name="Half Written")  # flushed: it has an id
        assert db.session.scalar(select(func.count()).where(Customer.id == customer.id)) == 1
        return subscription_service.add_subscription(customer.id, retired.id, date(2026, 1, 1))

    with app.test_request_context():
        assert perform(open_account_with_retired_plan) is REFUSED
        assert get_flashed_messages() == ["This plan is retired; choose an active plan."]
    # The session itself no longer sees the row: rolled back, not merely left uncommitted.
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0
    db.session.commit()  # a later commit at the edge has nothing of it left to write
    assert committed("SELECT count(*) FROM customers") == 0


def test_commit_once_rolls_back_and_lets_the_error_pages_answer(app):
    PlanFactory(code="FIBRE-100")

    def create_two_plans():
        plan_service.create_plan(**{**FIBRE, "code": "FIBRE-200"})  # flushed, then the second one is refused
        return plan_service.create_plan(**FIBRE)

    with app.test_request_context(), pytest.raises(Conflict):
        commit_once(create_two_plans)
    assert db.session.scalar(select(func.count()).select_from(Plan)) == 1
    assert committed("SELECT count(*) FROM plans") == 1


def test_nothing_to_keep_is_rolled_back_not_committed(app):
    with app.test_request_context():
        plan = perform(plan_service.create_plan, **FIBRE, keep=lambda made: False)
    assert plan is not REFUSED
    assert db.session.scalar(select(func.count()).select_from(Plan)) == 0
    assert committed("SELECT count(*) FROM plans") == 0


def test_other_errors_reach_the_error_handlers_as_themselves(app):
    with app.test_request_context(), pytest.raises(ZeroDivisionError):
        perform(lambda: 1 / 0)


def test_a_refusal_has_no_truth_value_so_views_must_test_identity():
    with pytest.raises(TypeError, match="is REFUSED"):
        bool(REFUSED)

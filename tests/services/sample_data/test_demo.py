"""`flask data demo` (what `make run` loads) gives a newcomer a believable, consistent billing history."""
from __future__ import annotations

from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import Invoice, Payment, User
from isp_admin.services.billing.reconcile import reconcile


def test_demo_has_paid_and_overdue_invoices_that_reconcile(app, runner):
    result = runner.invoke(args=["data", "demo", "--customers", "80"])
    assert result.exit_code == 0, result.output
    assert "Sign in as admin@example.com with password" in result.output
    assert db.session.scalar(select(User.role).where(User.email == "admin@example.com")) == "admin"
    statuses = dict(db.session.execute(select(Invoice.status, func.count()).group_by(Invoice.status)).all())
    assert statuses.get("paid", 0) > 0 and statuses.get("overdue", 0) > 0, statuses
    assert db.session.scalar(select(func.count()).select_from(Payment)) > 0
    assert reconcile() == []

    again = runner.invoke(args=["data", "demo", "--customers", "80"])  # make run twice: nothing new is loaded
    assert again.exit_code == 0 and db.session.scalar(select(func.count()).select_from(Invoice)) == sum(
        statuses.values())

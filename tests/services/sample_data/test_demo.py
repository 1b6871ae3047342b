"""`flask data demo` (what `make run` loads) gives a newcomer a believable, consistent billing history."""
from __future__ import annotations

from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import Customer, Invoice, Payment, User
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


def test_demo_opens_the_portal_for_a_customer_who_owes_and_prints_that_login(app, runner, client):
    import re

    result = runner.invoke(args=["data", "demo", "--customers", "40"])
    assert result.exit_code == 0, result.output
    found = re.search(r"Subscriber portal: \S+/portal/ as (\S+) with password (\S+)", result.output)
    assert found, result.output
    number, password = found.groups()
    owes = db.session.scalar(select(func.count()).select_from(Invoice).join(Customer).where(
        Customer.account_number == number, Invoice.status == "overdue"))
    assert owes >= 1
    signed = client.post("/portal/login", data={"identifier": number, "password": password})
    assert signed.status_code == 302 and signed.headers["Location"].endswith("/portal/")
    assert number in client.get("/portal/").get_data(as_text=True)
    again = runner.invoke(args=["data", "demo", "--customers", "40"])  # the second make run prints the same login
    assert f"as {number} with password {password}" in again.output

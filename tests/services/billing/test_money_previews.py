"""The amounts a plan change or a cancellation shows before it is confirmed come from running the change itself in a
savepoint that is rolled back: the same numbers it then issues, and nothing kept, on PostgreSQL and on SQLite."""
from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CreditNote, Invoice, Subscription
from isp_admin.services.billing import run as billing
from isp_admin.services.customers import subscriptions
from isp_admin.services.platform.clock import today
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.services.billing.test_statement_dates import backend, sqlite_app  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("backend")  # each test on PostgreSQL and on SQLite


def billed_this_month() -> Subscription:
    start = today().replace(day=1)
    sub = SubscriptionFactory(customer=CustomerFactory(), plan=PlanFactory(monthly_price_cents=3900),
                              start_date=start, billing_day=1, next_bill_date=start, billed_from=start)
    billing.generate_invoice_for_customer(sub.customer_id, start)
    db.session.commit()
    return sub


def rows() -> tuple[int, ...]:
    return tuple(db.session.scalar(select(func.count()).select_from(model))
                 for model in (Invoice, CreditNote, AuditEvent))


def test_a_plan_change_previews_what_it_then_issues_and_keeps_nothing():
    sub = billed_this_month()
    fibre = PlanFactory(name="Fibre 300", monthly_price_cents=7900)
    before = rows()

    preview = subscriptions.preview_change_plan(sub.id, fibre.id)
    db.session.commit()  # whatever the preview left in the session would be kept now: nothing is

    assert [d.kind for d in preview.documents] == ["invoice", "credit_note"]
    assert all(d.number is None and d.id is None for d in preview.documents)
    assert rows() == before
    assert db.session.get(Subscription, sub.id).plan_id != fibre.id

    done = subscriptions.change_plan_documents(sub.id, fibre.id)
    db.session.commit()

    assert done.amounts == preview.amounts
    assert [d.number[:3] for d in done.documents] == ["INV", "CN-"]
    assert done.subscription.plan_id == fibre.id and done.plan_name == "Fibre 300"


def test_a_cancellation_previews_its_credit():
    sub = billed_this_month()
    day = today()
    before = rows()

    preview = subscriptions.preview_cancel(sub.id, day)
    db.session.commit()

    assert rows() == before and db.session.get(Subscription, sub.id).status == "active"
    if day < sub.next_bill_date:
        assert [d.kind for d in preview.documents] == ["credit_note"]
    assert subscriptions.cancel_documents(sub.id, day).amounts == preview.amounts


def test_a_change_with_no_billed_period_issues_nothing():
    sub = SubscriptionFactory(start_date=date(2026, 1, 15))  # its periods are billed elsewhere
    assert subscriptions.preview_change_plan(sub.id, PlanFactory().id).documents == ()

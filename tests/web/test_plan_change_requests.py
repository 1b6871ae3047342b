"""The staff end of the portal: plan changes customers ask for wait in a queue that staff approve or reject, and
the customer page shows the customer's portal access with a button that emails them a sign-in link."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import PlanChangeRequest, PortalAccount, Subscription
from isp_admin.services.platform.clock import utcnow
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.support.smtp import body_text, outbox_messages


def text_of(response) -> str:
    return response.get_data(as_text=True)


@pytest.fixture
def asked():
    """A customer on Fibre 20 who asked for Fibre 100; returns the request's id and the plans' ids."""
    slow, fast = PlanFactory(name="Fibre 20"), PlanFactory(name="Fibre 100")
    customer = CustomerFactory(name="Njeri Kamau")
    subscription = SubscriptionFactory(customer=customer, plan=slow)
    request = PlanChangeRequest(customer_id=customer.id, subscription_id=subscription.id, plan_id=fast.id,
                                note="Working from home now")
    db.session.add(request)
    db.session.commit()
    return {"request": request.id, "customer": customer.id, "subscription": subscription.id, "fast": fast.id,
            "slow": slow.id}


def fresh(model, row_id: int):
    db.session.rollback()
    return db.session.get(model, row_id)


def test_the_queue_has_an_empty_state(client, login):
    login("readonly")
    assert "No requests waiting" in text_of(client.get("/requests/plan-changes"))


def test_the_queue_lists_who_asked_for_what(client, login, asked):
    login("readonly")
    page = text_of(client.get("/requests/plan-changes"))
    row = page.split(f'id="request-{asked["request"]}"')[1].split("</tr>")[0]
    assert "Njeri Kamau" in row and "Fibre 20 &rarr; <strong>Fibre 100</strong>" in row
    assert "Working from home now" in row
    assert "Approve" not in row  # read-only staff see the queue, not the buttons


def test_approving_changes_the_plan_once(client, login, asked):
    login("support")
    response = client.post(f"/requests/plan-changes/{asked['request']}/approve")
    assert response.status_code == 302
    assert fresh(Subscription, asked["subscription"]).plan_id == asked["fast"]
    decided = fresh(PlanChangeRequest, asked["request"])
    assert decided.status == "approved" and decided.decided_at is not None

    again = client.post(f"/requests/plan-changes/{asked['request']}/approve", follow_redirects=True)
    assert again.status_code == 200
    assert fresh(PlanChangeRequest, asked["request"]).status == "approved"
    assert "No requests waiting" in text_of(again)


def test_rejecting_keeps_the_plan_and_the_note(client, login, asked):
    login("billing")
    response = client.post(f"/requests/plan-changes/{asked['request']}/reject",
                           data={"note": "Fibre 100 is not in your street yet"})
    assert response.status_code == 302
    assert fresh(Subscription, asked["subscription"]).plan_id == asked["slow"]
    decided = fresh(PlanChangeRequest, asked["request"])
    assert (decided.status, decided.decision_note) == ("rejected", "Fibre 100 is not in your street yet")
    approve_after = client.post(f"/requests/plan-changes/{asked['request']}/approve")
    assert approve_after.status_code == 302
    assert fresh(Subscription, asked["subscription"]).plan_id == asked["slow"]


def test_bad_decisions_are_client_errors(client, login, asked):
    login("admin")
    assert client.post("/requests/plan-changes/99999999999999999999999/approve").status_code == 404
    too_long = client.post(f"/requests/plan-changes/{asked['request']}/reject", data={"note": "x" * 501})
    assert too_long.status_code == 302
    assert fresh(PlanChangeRequest, asked["request"]).status == "pending"
    nul = client.post(f"/requests/plan-changes/{asked['request']}/reject", data={"note": "no\x00"})
    assert nul.status_code in (400, 422)
    assert fresh(PlanChangeRequest, asked["request"]).status == "pending"


# --- the customer page's portal card ------------------------------------------------------------------------------


def test_the_customer_page_shows_portal_access_and_pending_requests(client, login, asked):
    login("readonly")
    page = text_of(client.get(f"/customers/{asked['customer']}"))
    assert 'id="portal-account">Not yet<' in page
    assert "Fibre 100" in page.split('id="portal-requests"')[1]
    assert "Send sign-in link" not in page  # read-only

    db.session.add(PortalAccount(customer_id=asked["customer"], password_hash="x", password_set_at=utcnow(),
                                 last_login_at=utcnow()))
    db.session.commit()
    page = text_of(client.get(f"/customers/{asked['customer']}"))
    assert 'id="portal-account">Yes<' in page and 'id="portal-last-login">Never<' not in page


def test_staff_email_a_sign_in_link(app, client, login):
    login("support")
    customer = CustomerFactory(email="wanjiru@mail.example")
    page = text_of(client.get(f"/customers/{customer.id}"))
    assert "Send sign-in link" in page

    response = client.post(f"/customers/{customer.id}/portal-invite", follow_redirects=True)

    assert response.status_code == 200 and "is on its way to wanjiru@mail.example" in text_of(response)
    [message] = outbox_messages(app)
    assert message["To"] == "wanjiru@mail.example" and "/portal/" in body_text(message)
    db.session.rollback()
    assert db.session.scalar(select(PortalAccount.id).where(PortalAccount.customer_id == customer.id)) is not None


def test_a_customer_without_email_gets_a_flash_not_a_500(app, client, login):
    login("billing")
    customer = CustomerFactory(email=None)
    assert "Add an email address" in text_of(client.get(f"/customers/{customer.id}"))
    response = client.post(f"/customers/{customer.id}/portal-invite", follow_redirects=True)
    assert response.status_code == 200 and "No sign-in link sent" in text_of(response)
    assert outbox_messages(app) == []



def test_support_may_not_approve_a_change_that_moves_money_billing_may(client, login, asked):
    from datetime import timedelta

    from isp_admin.models import CreditNote, Invoice
    from isp_admin.services.billing import run as billing
    from isp_admin.services.platform.clock import today

    start = today().replace(day=1)
    sub = fresh(Subscription, asked["subscription"])
    sub.start_date = sub.next_bill_date = sub.billed_from = start - timedelta(days=0)
    sub.billing_day = 1
    db.session.commit()
    assert billing.generate_invoice_for_customer(asked["customer"], start) is not None  # the month is billed
    db.session.commit()
    invoices_before = db.session.query(Invoice).count()

    login("support")
    refused = client.post(f"/requests/plan-changes/{asked['request']}/approve", follow_redirects=True)
    assert "ask billing staff to approve it" in text_of(refused)
    assert fresh(PlanChangeRequest, asked["request"]).status == "pending"
    assert fresh(Subscription, asked["subscription"]).plan_id == asked["slow"]
    assert db.session.query(Invoice).count() == invoices_before and db.session.query(CreditNote).count() == 0

    client.post("/logout")
    login("billing")
    assert client.post(f"/requests/plan-changes/{asked['request']}/approve").status_code == 302
    assert fresh(PlanChangeRequest, asked["request"]).status == "approved"
    assert fresh(Subscription, asked["subscription"]).plan_id == asked["fast"]

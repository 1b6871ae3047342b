"""Bulk actions on the lists, in the request: a preview that writes nothing, then each row through the same service
as its own page (audited once), idempotent per row, one row's failure reported while the rest go on; the selection
re-read from the filter on the server; Export selected; and hostile posts refused without a 500."""
from __future__ import annotations

import csv
import io
import re
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select, text

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, JobRun, Notification, Subscription, SuspensionPeriod
from isp_admin.services.billing import payments as payment_service
from isp_admin.services.messaging import delivery
from isp_admin.services.platform.clock import today
from isp_admin.web.bulk import views as bulk_views
from tests.conftest import is_postgres
from tests.factories import PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory
from tests.support.smtp import outbox_messages
from tests.web.test_lists import issued


def text_of(response) -> str:
    return response.get_data(as_text=True)


def outcomes(response) -> dict[str, int]:
    """The preview's or result's count per outcome."""
    return {key: int(n.replace(",", "")) for key, n in
            re.findall(r'data-outcome="([a-z_]+)"><span>[^<]*</span><strong>([\d,]+)</strong>', text_of(response))}


def audits(action: str) -> list[AuditEvent]:
    db.session.rollback()
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def count(model, *where) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def ids(*rows) -> list[str]:
    return [str(row.id) for row in rows]


# --- invoices: send, remind ---------------------------------------------------------------------------------------

@pytest.fixture
def invoices():
    """An unsent invoice, one sent already, a draft, and one whose customer has no email address."""
    unsent = issued(CustomerFactory(name="Unsent Una", email="una@mail.example"), -5)
    sent = issued(CustomerFactory(name="Sent Sam"), -5)
    delivery.send_invoice(sent.id)
    no_email = issued(CustomerFactory(name="Offline Olga", email=None), -5)
    from isp_admin.services.billing import invoices as invoice_service

    draft = invoice_service.create_draft(no_email.customer_id, [{"description": "Router", "quantity": 1,
                                                                 "unit_price_cents": 900, "tax_rate_bp": 0}], today())
    db.session.commit()
    return {"unsent": unsent, "sent": sent, "no_email": no_email, "draft": draft}


def test_the_preview_says_what_sending_would_do_and_writes_nothing(app, client, login, invoices):
    login("billing")
    notifications, events = count(Notification), count(AuditEvent)
    response = client.post("/bulk/invoices/preview", data={"action": "send_invoices",
                                                           "ids": ids(*invoices.values())})
    assert response.status_code == 200
    assert outcomes(response) == {"sent": 1, "skipped_already_sent": 1, "skipped_no_email": 1, "skipped_draft": 1}
    page = text_of(response)
    assert invoices["unsent"].number in page and "Email it to una@mail.example." in page
    assert 'id="bulk-confirm"' in page and "Send invoices (1)" in page
    assert (count(Notification), count(AuditEvent)) == (notifications, events)


def test_sending_emails_each_unsent_invoice_once_and_a_second_run_sends_nothing(app, client, login, invoices):
    user = login("billing")
    before = len(outbox_messages(app))
    data = {"action": "send_invoices", "ids": ids(*invoices.values())}
    first = client.post("/bulk/invoices/apply", data=data)
    assert first.status_code == 200
    assert outcomes(first) == {"sent": 1, "skipped_already_sent": 1, "skipped_no_email": 1, "skipped_draft": 1}
    messages = outbox_messages(app)
    assert len(messages) == before + 1
    [to_una] = [m for m in messages if m["To"] == "una@mail.example"]
    assert invoices["unsent"].number in to_una["Subject"]
    sends = [e for e in audits("invoice.send") if e.entity_id == invoices["unsent"].id]
    assert len(sends) == 1 and sends[0].actor_id == user.id  # audited once, as the person who confirmed

    second = client.post("/bulk/invoices/apply", data=data)
    assert outcomes(second) == {"skipped_already_sent": 2, "skipped_no_email": 1, "skipped_draft": 1}
    assert len(outbox_messages(app)) == before + 1
    assert len([e for e in audits("invoice.send") if e.entity_id == invoices["unsent"].id]) == 1


def test_reminders_go_once_per_invoice_and_never_for_what_is_paid(app, client, login):
    login("billing")
    late = issued(CustomerFactory(name="Late Lee"), 10)
    paid = issued(CustomerFactory(name="Paid Pia"), 10)
    payment_service.record_payment(paid.customer_id, paid.total_cents, "cash", today(), today(), invoice_id=paid.id)
    db.session.commit()
    data = {"action": "send_reminders", "ids": ids(late, paid)}

    assert outcomes(client.post("/bulk/invoices/preview", data=data)) == {"reminded": 1, "skipped_nothing_owed": 1}
    assert outcomes(client.post("/bulk/invoices/apply", data=data)) == {"reminded": 1, "skipped_nothing_owed": 1}
    reminder = db.session.scalar(select(Notification).where(Notification.invoice_id == late.id,
                                                            Notification.kind.like("reminder%")))
    assert (reminder.kind, reminder.status) == ("reminder_after", "sent")
    assert f"Your invoice {late.number} is overdue" in [m["Subject"] for m in outbox_messages(app)]
    again = client.post("/bulk/invoices/apply", data=data)
    assert outcomes(again) == {"skipped_already_reminded": 1, "skipped_nothing_owed": 1}
    assert count(Notification, Notification.invoice_id == late.id, Notification.kind.like("reminder%")) == 1
    assert len(audits("invoice.remind")) == 1


# --- customers: suspend, resume -----------------------------------------------------------------------------------

@pytest.fixture
def service():
    """Three customers on Fibre (one with two lines), two on Home, and one suspended for non-payment."""
    fibre, home = PlanFactory(name="Fibre"), PlanFactory(name="Home")
    on_fibre = [CustomerFactory(name=f"Fibre {n}") for n in range(3)]
    for customer in on_fibre:
        SubscriptionFactory(customer=customer, plan=fibre)
    SubscriptionFactory(customer=on_fibre[0], plan=fibre)
    on_home = [CustomerFactory(name=f"Home {n}") for n in range(2)]
    for customer in on_home:
        SubscriptionFactory(customer=customer, plan=home)
    debtor = CustomerFactory(name="Debtor", status="suspended")
    SubscriptionFactory(customer=debtor, plan=fibre, status="suspended", suspension_reason="non_payment")
    db.session.commit()
    return {"fibre": fibre, "home": home, "on_fibre": on_fibre, "on_home": on_home, "debtor": debtor}


def statuses(customers) -> list[tuple]:
    db.session.rollback()
    return [tuple(db.session.scalars(select(Subscription.status).where(Subscription.customer_id == c.id)
                                     .order_by(Subscription.id))) for c in customers]


def test_all_matching_is_the_filter_run_again_on_the_server_not_the_posted_ids(client, login, service):
    user = login("support")
    data = {"action": "suspend", "all": "1", "filter": f"plan={service['fibre'].id}&sort=name",
            "ids": ids(*service["on_home"])}  # ids outside the filter count for nothing
    preview = client.post("/bulk/customers/preview", data=data)
    assert outcomes(preview) == {"suspended": 3, "skipped_no_active_service": 1}
    assert "Suspend 2 subscriptions (reason: manual)." in text_of(preview)

    result = client.post("/bulk/customers/apply", data=data)
    assert outcomes(result) == {"suspended": 3, "skipped_no_active_service": 1}
    assert statuses(service["on_fibre"]) == [("suspended", "suspended"), ("suspended",), ("suspended",)]
    assert statuses(service["on_home"]) == [("active",), ("active",)]
    events = audits("subscription.suspend")
    assert len(events) == 4 and {e.actor_id for e in events} == {user.id}
    assert count(SuspensionPeriod) == 4  # one open period per subscription suspended

    again = client.post("/bulk/customers/apply", data=data)
    assert outcomes(again) == {"skipped_no_active_service": 4}
    assert len(audits("subscription.suspend")) == 4


def test_ticked_rows_count_only_while_they_match_the_filter(client, login, service):
    login("support")
    data = {"action": "suspend", "filter": f"plan={service['home'].id}",
            "ids": ids(service["on_home"][0], *service["on_fibre"])}
    assert outcomes(client.post("/bulk/customers/apply", data=data)) == {"suspended": 1}
    assert statuses(service["on_home"]) == [("suspended",), ("active",)]
    assert statuses(service["on_fibre"][1:]) == [("active",), ("active",)]


def test_resume_lifts_what_was_suspended_by_hand_and_leaves_non_payment_alone(client, login, service):
    login("support")
    customers = [*service["on_home"], service["debtor"]]
    suspend = {"action": "suspend", "ids": ids(*service["on_home"])}
    assert outcomes(client.post("/bulk/customers/apply", data=suspend)) == {"suspended": 2}
    resume = {"action": "resume", "ids": ids(*customers)}
    assert outcomes(client.post("/bulk/customers/preview", data=resume)) == {"resumed": 2, "skipped_non_payment": 1}
    assert outcomes(client.post("/bulk/customers/apply", data=resume)) == {"resumed": 2, "skipped_non_payment": 1}
    assert statuses(customers) == [("active",), ("active",), ("suspended",)]
    assert outcomes(client.post("/bulk/customers/apply", data=resume)) == {"skipped_not_suspended": 2,
                                                                           "skipped_non_payment": 1}
    assert len(audits("subscription.resume")) == 2


@contextmanager
def refusing_updates_of(subscription_id: int):
    """A trigger that refuses one subscription's updates, as a database guard would; dropped after."""
    if not is_postgres():
        pytest.skip("PostgreSQL triggers")
    db.session.execute(text(f"""
        CREATE OR REPLACE FUNCTION test_refuse_subscription() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.id = {int(subscription_id)} THEN RAISE EXCEPTION 'refused by the test trigger'; END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER test_refuse_subscription BEFORE UPDATE ON subscriptions
          FOR EACH ROW EXECUTE FUNCTION test_refuse_subscription();
    """))
    db.session.commit()
    try:
        yield
    finally:
        db.session.rollback()
        db.session.execute(text("DROP TRIGGER IF EXISTS test_refuse_subscription ON subscriptions; "
                                "DROP FUNCTION IF EXISTS test_refuse_subscription()"))
        db.session.commit()


def test_a_row_that_fails_is_reported_and_rolled_back_alone_while_the_others_go_on(client, login, service):
    login("support")
    bad = service["on_fibre"][1]
    bad_subscription = db.session.scalar(select(Subscription.id).where(Subscription.customer_id == bad.id))
    with refusing_updates_of(bad_subscription):
        result = client.post("/bulk/customers/apply", data={"action": "suspend", "ids": ids(*service["on_fibre"])})
    assert result.status_code == 200
    assert outcomes(result) == {"suspended": 2, "failed": 1}
    assert "refused by the test trigger" in text_of(result) and bad.name in text_of(result)
    assert statuses(service["on_fibre"]) == [("suspended", "suspended"), ("active",), ("suspended",)]
    # Nothing of the failed row was kept: no audit event, no suspension period for it.
    assert bad_subscription not in [e.entity_id for e in audits("subscription.suspend")]
    assert count(SuspensionPeriod, SuspensionPeriod.subscription_id == bad_subscription) == 0


def test_a_large_selection_is_refused_when_the_queue_is_down_and_nothing_is_left_running(app, make_app, login):
    customers = [CustomerFactory() for _ in range(2)]
    for customer in customers:
        SubscriptionFactory(customer=customer)
    db.session.commit()
    broken = make_app(REDIS_URL="redis://127.0.0.1:1/0", BULK_INLINE_LIMIT=1)
    client = broken.test_client()
    login("billing", client_=client)

    response = client.post("/bulk/customers/apply", data={"action": "suspend", "ids": ids(*customers)},
                           follow_redirects=True)
    assert response.status_code == 200
    assert "Suspend service could not be started" in text_of(response) and "does not answer" in text_of(response)
    assert count(JobRun) == 0 and statuses(customers) == [("active",), ("active",)]


# --- the selection, refused -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    {"action": "suspend"},                                      # nothing ticked, not "all"
    {"action": "suspend", "ids": "abc"}, {"action": "suspend", "ids": "0"}, {"action": "suspend", "ids": "-4"},
    {"action": "suspend", "ids": str(10**30)}, {"action": "suspend", "ids": "1e3"},
    {"action": "detonate", "all": "1"}, {"action": "", "all": "1"},
    {"action": "suspend", "all": "1", "filter": "sort=password"},
    {"action": "suspend", "all": "1", "filter": "plan=" + "9" * 12},
    {"action": "suspend", "all": "1", "filter": "q=" + "x" * 3000},
    {"action": "suspend", "all": "1", "filter": "&".join(f"q{n}=1" for n in range(100))},
    {"action": "suspend", "all": "1", "filter": "q=nobody-at-all"},  # matches nothing
    {"action": "suspend", "ids": "999999"},                      # a customer that does not exist
])
@pytest.mark.parametrize("step", ["preview", "apply"])
def test_a_hostile_or_empty_selection_is_refused_on_the_list_never_a_500(client, login, service, data, step):
    login("support")
    events = count(AuditEvent)
    response = client.post(f"/bulk/customers/{step}", data=data)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/customers/")
    assert count(AuditEvent) == events
    assert statuses(service["on_home"]) == [("active",), ("active",)]


def test_more_rows_than_a_bulk_action_takes_are_refused_until_the_filter_narrows(client, login, service,
                                                                                  monkeypatch):
    login("support")
    monkeypatch.setattr(bulk_views, "MAX_ROWS", 4)
    response = client.post("/bulk/customers/preview", data={"action": "suspend", "all": "1"}, follow_redirects=True)
    assert "More than 4 customers match: narrow the filter first." in text_of(response)
    response = client.post("/bulk/customers/preview", data={"action": "suspend", "all": "1",
                                                            "filter": f"plan={service['home'].id}"})
    assert outcomes(response) == {"suspended": 2}


def test_a_post_without_the_csrf_token_is_refused(app, make_app):
    customer = CustomerFactory()
    SubscriptionFactory(customer=customer)
    db.session.commit()
    client = make_app(WTF_CSRF_ENABLED=True).test_client()
    user = UserFactory(role="admin")
    db.session.commit()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', text_of(client.get("/login"))).group(1)
    signed_in = client.post("/login", data={"email": user.email, "password": PASSWORD, "csrf_token": token})
    assert signed_in.status_code == 302
    response = client.post("/bulk/customers/apply", data={"action": "suspend", "ids": str(customer.id)})
    assert response.status_code == 400 and "CSRF" in text_of(response)  # the app-wide guard answers first
    assert statuses([customer]) == [("active",)]


# --- Export selected ------------------------------------------------------------------------------------------------

def exported(response) -> list[dict]:
    body = response.get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def test_export_selected_downloads_the_ticked_rows_that_match_the_filter(client, login):
    login("readonly")
    customers = [CustomerFactory(name=f"Payer {n}") for n in range(5)]
    payments = [payment_service.record_payment(c.id, 100 * (n + 1), ("cash", "card")[n % 2], today(), today())[0]
                for n, c in enumerate(customers)]
    db.session.commit()
    ticked = {"ids": ids(payments[0], payments[1], payments[2]), "filter": "method=cash"}
    response = client.post("/bulk/payments/export", data=ticked)
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "payments-selected-" in response.headers["Content-Disposition"]
    assert sorted(r["Payment id"] for r in exported(response)) == sorted(ids(payments[0], payments[2]))
    everything = client.post("/bulk/payments/export", data={"all": "1", "filter": "method=cash&sort=id"})
    assert [r["Payment id"] for r in exported(everything)] == ids(payments[0], payments[2], payments[4])


def test_the_preview_runs_the_same_queries_for_three_rows_or_thirty(app, client, login, query_counter):
    login("support")
    plan = PlanFactory()

    def add(n: int) -> None:
        for _ in range(n):
            SubscriptionFactory(customer=CustomerFactory(), plan=plan)
        db.session.commit()

    def measure() -> int:
        with app.app_context(), query_counter() as statements:
            response = client.post("/bulk/customers/preview", data={"action": "suspend", "all": "1"})
        assert response.status_code == 200
        return len(statements)

    add(3)
    small = measure()
    add(27)
    assert measure() == small <= 5  # the user, the ids, the customers, their subscriptions

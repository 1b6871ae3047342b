"""Words, not ids: history tables and job pages speak the staff's language (plan names, PPPoE logins, money,
status words, dates), naming every record with one query however many events a page shows."""
from __future__ import annotations

import html
import re
from datetime import date

from sqlalchemy import select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, JobRun
from isp_admin.services.billing import payments as payment_service
from isp_admin.services.billing.money import format_cents
from isp_admin.services.customers import subscriptions as subscription_service
from isp_admin.services.platform import audit
from isp_admin.services.platform.audit_words import count_words, describe_events
from isp_admin.services.platform.clock import today
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory


def text_of(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def history(page: str) -> str:
    """The History card of a page, tags stripped and spaces squeezed."""
    part = page.split(">History<", 1)[1]
    return " ".join(re.sub(r"<[^>]+>", " ", part).split())


def money(cents: int) -> str:
    return format_cents(cents, "USD")


def test_a_plan_change_reads_with_plan_names_and_the_login(client, login):
    home, fibre = PlanFactory(name="Home 50"), PlanFactory(name="Fibre 300")
    sub = SubscriptionFactory(plan=home, pppoe_username="zoe.obrien")
    subscription_service.change_plan(sub.id, fibre.id)
    db.session.commit()
    login("readonly")

    trail = history(text_of(client.get(f"/subscriptions/{sub.id}")))

    assert "Plan changed" in trail and "Subscription zoe.obrien" in trail
    assert "Plan : Home 50 → Fibre 300" in trail
    assert f"plan_id: {home.id}" not in trail and f"{home.id} → {fibre.id}" not in trail


def test_money_methods_and_statuses_read_as_words(client, login):
    customer = CustomerFactory()
    payment_service.record_payment(customer.id, 2000, "bank_transfer", today(), today(), reference="TRX-1")
    sub = SubscriptionFactory(customer=customer, pppoe_username="amina.home")
    subscription_service.suspend(sub.id, "vacation")
    db.session.commit()
    login("readonly")

    trail = history(text_of(client.get(f"/customers/{customer.id}")))

    assert "Payment recorded" in trail and "Amount : $20.00" in trail and "Method : Bank transfer" in trail
    assert "amount_cents" not in trail and "2000" not in trail
    assert "Suspended" in trail and "Status : Active → Suspended" in trail
    assert "Suspension reason : — → Vacation" in trail


def test_a_new_record_names_what_it_points_at_and_writes_dates_as_dates(client, login):
    plan = PlanFactory(name="Fibre 100", monthly_price_cents=4900)
    customer = CustomerFactory(name="Wanjiru Mwangi")
    subscription_service.add_subscription(customer.id, plan.id, date(2026, 1, 10), billing_day=1,
                                          pppoe_username="wanjiru.m")
    db.session.commit()
    login("readonly")

    trail = history(text_of(client.get(f"/customers/{customer.id}")))

    assert "Subscription added" in trail and "Subscription wanjiru.m" in trail
    assert "Plan : Fibre 100" in trail and "Customer : Wanjiru Mwangi" in trail
    assert "Start date : 10 Jan 2026" in trail and "Billing day : 1" in trail and "PPPoE login : wanjiru.m" in trail


def test_unknown_fields_fall_back_to_their_name_in_words_and_gone_records_to_their_number(app):
    events = [AuditEvent(at=today(), actor_type="system", actor_label="system", action="widget.frobnicate",
                         entity_type="widgets", entity_id=7,
                         after={"warp_factor": 9, "plan_id": 987654, "tax_rate_bp": 750, "ok": True,
                                "seen_at": "2026-03-01T12:34:56+00:00", "tags": ["a_b", "c"], "big": 1234567})]
    [entry] = describe_events(events, money)
    words = {c.label: c.after for c in entry.changes}
    assert entry.action == "Widget: frobnicate" and entry.subject == "Widgets #7"
    assert words == {"Warp factor": "9", "Plan": "#987654", "Tax rate": "7.5%", "Ok": "Yes",
                     "Seen at": "2026-03-01 12:34 UTC", "Tags": "a_b, c", "Big": "1,234,567"}


def test_a_long_or_odd_value_is_cut_and_escaped(client, login):
    customer = CustomerFactory()
    audit.record("customer.update", customer, before={"notes": None},
                 after={"notes": "<script>alert(1)</script>" + "x" * 1000}, customer_id=customer.id)
    db.session.commit()
    login("readonly")
    raw = client.get(f"/customers/{customer.id}").get_data(as_text=True)
    assert "<script>alert(1)" not in raw and "&lt;script&gt;" in raw
    assert "x" * 400 not in raw and "x" * 200 in raw


def count_queries(app, client, query_counter, url: str) -> int:
    assert client.get(url).status_code == 200  # warm: cached figures (the plan picker) are not what is measured
    with app.app_context(), query_counter() as statements:
        assert client.get(url).status_code == 200
    return len(statements)


def test_names_cost_one_query_however_many_events_and_records(app, client, login, query_counter):
    login("readonly")
    plans = PlanFactory.create_batch(6)
    busy = SubscriptionFactory(plan=plans[0], pppoe_username="busy")
    subscription_service.change_plan(busy.id, plans[1].id)
    db.session.commit()
    urls = (f"/subscriptions/{busy.id}", f"/customers/{busy.customer_id}")
    before = {url: count_queries(app, client, query_counter, url) for url in urls}
    for n in range(20):  # twenty more events naming five plans, one customer and one subscription
        audit.record("subscription.update", busy, before={"plan_id": plans[n % 5].id},
                     after={"plan_id": plans[n % 5 + 1].id, "customer_id": busy.customer_id},
                     customer_id=busy.customer_id)
    db.session.commit()
    after = {url: count_queries(app, client, query_counter, url) for url in urls}
    assert before == after, (before, after)
    trail = history(text_of(client.get(f"/subscriptions/{busy.id}")))
    assert all(plan.name in trail for plan in plans)


# --- job pages --------------------------------------------------------------------------------------------------


def test_a_run_page_words_its_counts_and_its_steps(client, login):
    parent = JobRun(kind="nightly", as_of=date(2026, 3, 1), status="succeeded", triggered_by="scheduler",
                    total_chunks=2, done_chunks=2,
                    counts={"invoices": 12, "total_cents": 120450, "reminders_queued": 3, "_done": ["x"]})
    db.session.add(parent)
    db.session.flush()
    db.session.add(JobRun(kind="generate_monthly_invoices", as_of=date(2026, 3, 1), status="succeeded",
                          triggered_by="scheduler", parent_id=parent.id, counts={"invoices": 12}))
    db.session.commit()
    login("readonly")

    page = text_of(client.get(f"/billing/jobs/{parent.id}"))
    assert "Nightly run for 01 Mar 2026" in page
    counts = " ".join(re.sub(r"<[^>]+>", " ", page.split('data-role="counts">', 1)[1].split("</dl>")[0]).split())
    assert counts == "Invoices issued 12 Invoiced $1,204.50 Reminders queued 3"
    assert ">Invoicing</a>" in page and "generate monthly invoices" not in page

    listing = text_of(client.get("/billing/jobs/"))
    assert "Nightly run" in listing and "Invoiced: $1,204.50" in listing and "01 Mar 2026" in listing

    progress = client.get(f"/billing/jobs/{parent.id}/progress.json").get_json()
    assert progress["count_words"] == [{"label": "Invoices issued", "value": "12"},
                                       {"label": "Invoiced", "value": "$1,204.50"},
                                       {"label": "Reminders queued", "value": "3"}]
    assert [s["label"] for s in progress["steps"]] == ["Invoicing"]
    assert progress["counts"]["total_cents"] == 120450  # the stored counts stay, for scripts


def test_count_words_hide_bookkeeping_and_humanise_the_unknown(app):
    assert count_words({"_ranges": [[1, 2]], "coa_sent": 2, "refunded_cents": 550}, money) == [
        ("Coa sent", "2"), ("Refunded", "$5.50")]


def test_the_trail_is_read_from_the_database_not_rewritten(app):
    """The words are for the page only: the events keep their raw keys and ids."""
    customer = CustomerFactory()
    payment_service.record_payment(customer.id, 2000, "cash", today(), today())
    db.session.commit()
    [event] = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "payment.record"))
    assert event.after["amount_cents"] == 2000 and event.after["method"] == "cash"

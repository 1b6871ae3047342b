"""One table of nightly steps (services/billing/steps.py): the scheduler, the CLI, the run page and the API read it,
so each edge runs the same steps to the same result, previews them alike, and refuses the same dates in the same
words."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from isp_admin.cli.billing import billing_cli
from isp_admin.errors import Invalid
from isp_admin.extensions import db
from isp_admin.jobs import tasks
from isp_admin.jobs.queue import KINDS, get_queue
from isp_admin.jobs.schedule import periodic_jobs
from isp_admin.models import Customer, Invoice, JobRun, Notification, Subscription
from isp_admin.services.billing import run as billing
from isp_admin.services.billing import steps
from isp_admin.services.billing.calendar import add_months, bill_date
from isp_admin.services.platform.clock import today
from tests.api.helpers import bearer
from tests.conftest import truncate_all
from tests.factories import PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory
from tests.jobs.conftest import _drop_redis_keys, run_worker
from tests.support.billing import refused_by_trigger

RULE = "A run cannot be started for a future date; preview it instead."


def build_world() -> None:
    """Ann is due tonight; Bob's last month is unpaid past due and grace (overdue, suspended, reminded)."""
    day = today()
    plan = PlanFactory(monthly_price_cents=3000, tax_rate_bp=1600)
    SubscriptionFactory(customer=CustomerFactory(name="Ann Due"), plan=plan, billing_day=day.day,
                        start_date=day, next_bill_date=day, pppoe_username="ann-1")
    year, month = add_months(day.year, day.month, -1)
    last_month = bill_date(year, month, day.day)
    bob = SubscriptionFactory(customer=CustomerFactory(name="Bob Behind"), plan=plan, billing_day=day.day,
                              start_date=last_month, next_bill_date=last_month, pppoe_username="bob-1")
    billing.bill_customer_range(last_month, (bob.customer_id, bob.customer_id))
    db.session.commit()


def snapshot() -> dict:
    """What a night leaves behind, by name (ids and timestamps differ between worlds)."""
    db.session.rollback()
    name = {c.id: c.name for c in db.session.scalars(select(Customer))}
    return {
        "invoices": sorted((name[i.customer_id], i.number, i.status, i.total_cents, i.amount_paid_cents)
                           for i in db.session.scalars(select(Invoice))),
        "subscriptions": sorted((s.pppoe_username, s.status, s.suspension_reason, s.next_bill_date)
                                for s in db.session.scalars(select(Subscription))),
        "notifications": sorted((name[n.customer_id], n.kind, n.status)
                                for n in db.session.scalars(select(Notification))),
        "steps": sorted((r.kind, r.as_of, r.status, tuple(sorted((k, v) for k, v in (r.counts or {}).items()
                                                                  if isinstance(v, int))))
                        for r in db.session.scalars(select(JobRun).where(JobRun.parent_id.is_not(None)))),
    }


def signed_in(app, role: str = "billing"):
    """A test client signed in as a new user of `role`."""
    user = UserFactory(role=role)
    db.session.commit()
    client = app.test_client()
    assert client.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 302
    return client


def test_every_edge_reads_the_one_table(jobs_app):
    # Every step has its job (the bulk actions' runs, jobs/bulk.py, are the table's only other kinds).
    assert tuple(kind for kind in KINDS if not kind.startswith("bulk_")) == steps.KINDS
    assert sorted(billing_cli.commands) == sorted([*(s.command for s in steps.STEPS), "run-nightly", "reconcile"])
    nightly = next(p for p in periodic_jobs() if p.name == "nightly")
    assert nightly.func == KINDS[steps.NIGHTLY]
    assert tuple(s.kind for s in steps.STEPS) == steps.NIGHTLY_STEPS
    assert [p.kind for p in steps.preview(steps.NIGHTLY, today())] == list(steps.NIGHTLY_STEPS)


def test_each_edge_runs_the_nightly_steps_to_the_same_result(jobs_app, flask_env, backends, queue_name):
    def world(run_it) -> dict:
        # Ids restart with every world, and so would the runs' stable job ids: the last world's jobs must go.
        _drop_redis_keys(backends["redis_url"], queue_name)
        truncate_all()
        build_world()
        run_it()
        return snapshot()

    def from_the_cli():
        result = jobs_app.test_cli_runner().invoke(args=["billing", "run-nightly"])
        assert result.exit_code == 0, result.output

    def from_the_page():
        client = signed_in(jobs_app)
        started = client.post("/billing/run", data={"as_of": today().isoformat()})
        assert started.status_code == 302 and "/billing/jobs/" in started.headers["Location"]
        run_worker(flask_env, timeout=120)

    def from_the_api():
        response = jobs_app.test_client().post("/api/billing/bulk-generate/", json={"kind": "nightly"},
                                               headers=bearer("billing", "read,billing"))
        assert response.status_code == 202, response.get_json()
        run_worker(flask_env, timeout=120)

    def from_the_scheduler():
        # What rq-scheduler does at NIGHTLY_CRON: queue the periodic job with no arguments (today's date).
        nightly = next(p for p in periodic_jobs() if p.name == "nightly")
        get_queue().enqueue(nightly.func)
        run_worker(flask_env, timeout=120)

    cli = world(from_the_cli)
    assert [k for k, *_ in cli["steps"]] == sorted(steps.NIGHTLY_STEPS)
    assert [s[:3] for s in cli["subscriptions"]] == [("ann-1", "active", None), ("bob-1", "suspended", "non_payment")]
    assert [(n, s) for n, _, s, *_ in cli["invoices"]] == [("Ann Due", "open"), ("Bob Behind", "overdue"),
                                                           ("Bob Behind", "open")]
    assert ("Bob Behind", "reminder_after", "sent") in cli["notifications"]
    for edge in (from_the_page, from_the_api, from_the_scheduler):
        assert world(edge) == cli, edge.__name__


def test_the_dry_runs_agree_on_the_page_the_cli_and_the_table(jobs_app):
    build_world()
    expected = {p.key: (p.count, p.total_cents) for p in steps.preview(steps.NIGHTLY, today())}
    db.session.rollback()
    assert expected["invoice"][0] == 2 and expected["mark_overdue"][0] == 1 and expected["suspend"][0] == 1

    page = signed_in(jobs_app, "readonly").get("/billing/run").get_data(as_text=True)
    shown = {key: int(count.replace(",", "")) for key, count in re.findall(r'id="count-(\w+)">([\d,]+)<', page)}
    assert shown == {key: count for key, (count, _) in expected.items()}

    result = jobs_app.test_cli_runner().invoke(args=["billing", "run-nightly", "--dry-run"])
    assert result.exit_code == 0, result.output
    recorded = db.session.scalar(select(JobRun).where(JobRun.dry_run.is_(True))).counts
    by_kind = {s.kind: s.key for s in steps.STEPS}
    from_cli = {by_kind[name.split(".")[0]]: value for name, value in recorded.items()
                if name.endswith((".invoices", ".affected", ".queued"))}
    assert from_cli == {key: count for key, (count, _) in expected.items()}
    assert recorded["generate_monthly_invoices.total_cents"] == expected["invoice"][1]


@pytest.mark.parametrize("days_ahead", [1, 400])
def test_a_future_run_is_refused_alike_by_every_edge_and_records_nothing(jobs_app, days_ahead):
    ahead = today() + timedelta(days=days_ahead)

    page = signed_in(jobs_app).post("/billing/run", data={"as_of": ahead.isoformat()}, follow_redirects=True)
    assert RULE in page.get_data(as_text=True)

    api = jobs_app.test_client().post("/api/billing/bulk-generate/", json={"kind": "nightly",
                                                                          "as_of": ahead.isoformat()},
                                      headers=bearer("billing", "read,billing"))
    body = api.get_json()
    assert api.status_code == 422 and body["message"] == RULE and body["error"]["details"]["as_of"]

    cli = jobs_app.test_cli_runner().invoke(args=["billing", "run-nightly", "--date", ahead.isoformat()])
    assert cli.exit_code == 2 and "--date" in cli.output

    with pytest.raises(Invalid) as refused:  # the scheduler's job, handed a date
        tasks.run_nightly(ahead.isoformat())
    assert refused.value.message == RULE

    assert db.session.scalar(select(JobRun.id)) is None and get_queue().count == 0
    # The preview may look ahead to the horizon, and no further: the same rule, from the same place.
    preview = jobs_app.test_cli_runner().invoke(args=["billing", "run-nightly", "--dry-run", "--date",
                                                      ahead.isoformat()])
    assert (preview.exit_code == 0) is (days_ahead <= 366), preview.output


def test_a_step_the_database_refuses_in_the_preview_leaves_the_page_whole(jobs_app):
    """The dry run applies each step for the next; a customer whose invoice the database refuses must cost the
    preview that chaining, not the page (the real run leaves that customer out and bills the rest)."""
    build_world()
    ann = db.session.scalar(select(Subscription).where(Subscription.pppoe_username == "ann-1"))
    client = signed_in(jobs_app, "readonly")
    with refused_by_trigger(f"NEW.subscription_id = {ann.id}"):
        page = client.get("/billing/run")
    text = page.get_data(as_text=True)
    assert page.status_code == 200, text[:500]
    assert re.search(r'id="count-invoice">2<', text) and "Ann Due" in text  # planned, as it stands
    for step in steps.STEPS:
        assert f'id="count-{step.key}"' in text
    assert db.session.scalar(select(Invoice.id).where(Invoice.issue_date == today())) is None

"""A bulk action too large for a request runs on a real RQ worker: recorded as a job run, done batch by batch,
each row audited once as the person who confirmed it, failures listed on the run's page, a second run harmless,
and a run whose job Redis lost is resumed by the same recovery as the billing runs."""
from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.jobs import bulk, recovery
from isp_admin.jobs.queue import KINDS
from isp_admin.models import AuditEvent, JobRun, Subscription
from isp_admin.services.billing.bulk_actions import ACTIONS as INVOICE_ACTIONS
from isp_admin.services.customers.bulk_actions import ACTIONS as CUSTOMER_ACTIONS
from tests.factories import PASSWORD, CustomerFactory, PlanFactory, SubscriptionFactory, UserFactory
from tests.jobs.conftest import _drop_redis_keys, run_worker
from tests.web.test_bulk import refusing_updates_of


def signed_in(app, role: str):
    user = UserFactory(role=role)
    db.session.commit()
    client = app.test_client()
    assert client.post("/login", data={"email": user.email, "password": PASSWORD}).status_code == 302
    return client, user


@pytest.fixture
def fibre(jobs_app):
    """30 customers on Fibre (more than one batch), and one on another plan; bulk runs above 5 rows queue a job."""
    jobs_app.config["BULK_INLINE_LIMIT"] = 5
    plan = PlanFactory(name="Fibre")
    customers = [CustomerFactory(name=f"Fibre {n:02d}") for n in range(30)]
    for customer in customers:
        SubscriptionFactory(customer=customer, plan=plan)
    SubscriptionFactory(customer=CustomerFactory(name="Elsewhere"))
    db.session.commit()
    return {"plan": plan, "customers": customers}


def suspended() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(Subscription).where(Subscription.status == "suspended"))


def suspend_events() -> list[AuditEvent]:
    db.session.rollback()
    return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == "subscription.suspend")))


def start(client, plan_id: int) -> JobRun:
    response = client.post("/bulk/customers/apply", data={"action": "suspend", "all": "1", "filter": f"plan={plan_id}"})
    assert response.status_code == 302, response.data[:300]
    run_id = int(re.fullmatch(r"/billing/jobs/(\d+)", response.headers["Location"]).group(1))
    db.session.rollback()
    return db.session.get(JobRun, run_id)


def test_a_large_suspension_runs_on_a_worker_audited_as_the_person_and_twice_is_harmless(jobs_app, flask_env, fibre):
    client, user = signed_in(jobs_app, "support")
    run = start(client, fibre["plan"].id)
    assert (run.kind, run.status, run.total_chunks, run.triggered_by) == ("bulk_suspend", "running", 2, user.email)
    assert suspended() == 0  # queued, not done in the request

    run_worker(flask_env)
    db.session.refresh(run)
    assert (run.status, run.done_chunks, run.counts["suspended"]) == ("succeeded", 2, 30)
    assert suspended() == 30
    events = suspend_events()
    assert len(events) == 30 and {(e.actor_type, e.actor_id) for e in events} == {("user", user.id)}
    page = client.get(f"/billing/jobs/{run.id}").get_data(as_text=True)
    assert "Bulk suspend" in page and re.search(r"(?i)suspended</dt><dd[^>]*>30<", page)

    again = start(client, fibre["plan"].id)
    run_worker(flask_env)
    db.session.refresh(again)
    assert again.status == "succeeded" and again.counts.get("skipped_no_active_service") == 30
    assert "suspended" not in again.counts and len(suspend_events()) == 30


def test_a_row_the_database_refuses_is_listed_on_the_run_and_the_rest_are_done(jobs_app, flask_env, fibre):
    client, _ = signed_in(jobs_app, "billing")
    bad = fibre["customers"][7]
    bad_subscription = db.session.scalar(select(Subscription.id).where(Subscription.customer_id == bad.id))
    with refusing_updates_of(bad_subscription):
        run = start(client, fibre["plan"].id)
        run_worker(flask_env)
    db.session.refresh(run)
    assert run.status == "succeeded" and run.counts["suspended"] == 29 and run.counts["failed_customers"] == 1
    assert suspended() == 29
    page = client.get(f"/billing/jobs/{run.id}").get_data(as_text=True)
    assert 'id="job-failures"' in page and bad.name in page and "refused by the test trigger" in page


def test_a_run_whose_job_redis_lost_is_resumed_by_the_recovery(jobs_app, flask_env, fibre, backends, queue_name):
    client, _ = signed_in(jobs_app, "admin")
    run = start(client, fibre["plan"].id)
    _drop_redis_keys(backends["redis_url"], queue_name)  # Redis restarted empty: the queued job is gone
    run_worker(flask_env)
    db.session.refresh(run)
    assert run.status == "running" and suspended() == 0

    outcome = recovery.recover_run(run.id, manual=True)
    assert outcome.action == "resumed", outcome.message
    run_worker(flask_env)
    db.session.rollback()
    run = db.session.get(JobRun, run.id)
    assert run.status == "succeeded" and run.counts["suspended"] == 30 and suspended() == 30


def test_every_bulk_action_has_its_job_kind():
    for name in {**INVOICE_ACTIONS, **CUSTOMER_ACTIONS}:
        assert KINDS[bulk.kind_of(name)] == "isp_admin.jobs.bulk.run_bulk"

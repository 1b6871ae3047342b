"""The CoA sweep as deployed: queued by the commit that changes a subscription and run by a real RQ worker; two
sweeps at once send one packet; a sweep killed mid-send loses nothing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import CoaRequest, Nas, NetworkChange
from isp_admin.services.billing import collections, invoices, payments
from isp_admin.services.network import coa, credentials
from isp_admin.unit_of_work import commit_step
from tests.conftest import ROOT
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory
from tests.jobs.conftest import start_flask
from tests.support.fake_nas import FakeNas
from tests.support.processes import kill

D = date


@pytest.fixture
def nas(jobs_app):
    fake = FakeNas("nas-secret").start()
    db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", secret="nas-secret", coa_port=fake.port))
    db.session.commit()
    yield fake
    fake.stop()


@pytest.fixture
def walled(jobs_app, freeradius, nas):
    """zoe, suspended for non-payment and online in the walled garden as session W1; her overdue invoice."""
    plan = PlanFactory(code="HOME50", download_mbps=50, upload_mbps=10, monthly_price_cents=3000, tax_rate_bp=0)
    customer = CustomerFactory()
    sub = SubscriptionFactory(customer=customer, plan=plan, pppoe_username="zoe", start_date=D(2026, 1, 1),
                              billing_day=1, next_bill_date=D(2026, 4, 1))
    db.session.commit()
    password = credentials.set_password(sub.id)
    draft = invoices.create_draft(customer.id, [{"description": "Service", "quantity": 1, "unit_price_cents": 3000,
                                                 "tax_rate_bp": 0}], D(2026, 3, 1))
    invoice = invoices.issue(draft.id, D(2026, 3, 1))
    db.session.commit()
    collections.run_mark_overdue(D(2026, 3, 16))
    collections.run_enforce_overdue(D(2026, 3, 23))
    db.session.commit()
    coa.dispatch(commit_step)  # the suspension's own change: no session yet, nothing sent
    radius = freeradius.client()
    assert radius.authenticate("zoe", password).first("Framed-Pool") == "walled-garden"
    radius.account("Start", "zoe", "W1", framed_ip="10.99.0.5")
    return {"customer": customer, "invoice": invoice, "password": password, "radius": radius}


def test_a_payment_reaches_the_router_within_seconds_through_a_real_worker(jobs_app, flask_env, walled, nas):
    jobs_app.config["NETWORK_KICK"] = True  # as deployed: the commit queues the sweep
    worker = start_flask(flask_env, "rq", "worker")
    try:
        started = time.monotonic()
        payments.record_payment(walled["customer"].id, None, "cash", D(2026, 3, 24), D(2026, 3, 24),
                                invoice_id=walled["invoice"].id)
        db.session.commit()
        [request] = nas.wait_for(1, timeout=30)
        elapsed = time.monotonic() - started
    finally:
        kill(worker)
        worker.stdout.close()
    assert request.kind == "disconnect" and request.first("Acct-Session-Id") == "W1"
    assert elapsed < 30  # well inside "the same minute" (a couple of seconds here, worker start included)
    back = walled["radius"].authenticate("zoe", walled["password"])
    assert back.accepted and back.first("Mikrotik-Rate-Limit") == "10M/50M"
    db.session.rollback()
    assert db.session.scalar(select(CoaRequest.status)) == "acked"


def test_without_the_kick_the_periodic_sweep_is_the_net(jobs_app, walled, nas):
    payments.record_payment(walled["customer"].id, None, "cash", D(2026, 3, 24), D(2026, 3, 24),
                            invoice_id=walled["invoice"].id)
    db.session.commit()  # NETWORK_KICK off: nothing queued, the change waits in network_changes
    time.sleep(0.3)
    assert nas.received == []
    assert db.session.scalar(select(func.count()).where(NetworkChange.processed_at.is_(None))) == 1
    from isp_admin.jobs.network import dispatch_network

    assert dispatch_network()["acked"] == 1
    assert [r.kind for r in nas.wait_for(1)] == ["disconnect"]


def test_two_sweeps_at_once_send_one_disconnect(jobs_app, walled, nas):
    payments.record_payment(walled["customer"].id, None, "cash", D(2026, 3, 24), D(2026, 3, 24),
                            invoice_id=walled["invoice"].id)
    db.session.commit()
    barrier, results, errors = threading.Barrier(2), [], []

    def sweep():
        try:
            with jobs_app.app_context():
                barrier.wait()
                results.append(coa.dispatch(commit_step))
                db.session.remove()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sum(r["changes"] for r in results) == 1 and sum(r["acked"] for r in results) == 1
    time.sleep(0.3)
    assert [r.kind for r in nas.received] == ["disconnect"]
    assert db.session.scalar(select(func.count()).select_from(CoaRequest)) == 1


SWEEP = """
import sys
from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.services.network import coa
from isp_admin.unit_of_work import commit_step
app = create_app()
with app.app_context():
    app.config["NETWORK_COA_TIMEOUT"] = 30.0  # waits on the silent NAS until killed
    print("sweeping", flush=True)
    coa.dispatch(commit_step)
"""


def test_a_sweep_killed_while_waiting_for_the_nas_loses_nothing(jobs_app, flask_env, walled, nas):
    payments.record_payment(walled["customer"].id, None, "cash", D(2026, 3, 24), D(2026, 3, 24),
                            invoice_id=walled["invoice"].id)
    db.session.commit()
    nas.answer = "silent"
    process = subprocess.Popen([sys.executable, "-c", SWEEP], env=flask_env, cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        assert len(nas.wait_for(1, timeout=30)) == 1  # the packet left; the answer never comes
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
        process.stdout.close()
    db.session.rollback()
    # Its change was committed into a request before sending; the send's own transaction died with it.
    request = db.session.scalar(select(CoaRequest))
    assert request.status == "pending" and request.attempts == 0
    nas.answer = "ack"
    assert coa.dispatch(commit_step)["acked"] == 1  # sent again: at least once, and the NAS acks
    assert [r.kind for r in nas.wait_for(2)] == ["disconnect", "disconnect"]
    assert db.session.scalar(select(func.count()).select_from(CoaRequest)) == 1

"""The nightly billing ↔ network check: scheduled, recorded as a job run (which the page and /metrics read), its
failure recorded too; `flask network reconcile` lists every mismatch and exits 1 when there is any;
`flask network dispatch` runs the CoA sweep by hand."""
from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from isp_admin.extensions import cache, db
from isp_admin.jobs.network import reconcile_network
from isp_admin.jobs.schedule import periodic_jobs
from isp_admin.models import CoaRequest, JobRun, Nas
from isp_admin.models.base import utcnow
from isp_admin.observability.metrics import BUSINESS_CACHE_KEY
from isp_admin.services.network import reconcile
from isp_admin.services.platform.clock import today
from tests.support.fake_nas import FakeNas, closed_udp_port
from tests.support.mismatches import found, online, plant_every_kind, subscription


def flask(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def runs() -> list[JobRun]:
    db.session.expire_all()
    return list(db.session.scalars(select(JobRun).order_by(JobRun.id)))


def test_the_nightly_check_is_in_the_schedule(app):
    app.config["NETWORK_RECONCILE_CRON"] = "45 3 * * *"
    [entry] = [p for p in periodic_jobs() if p.name == "network_reconcile"]
    assert (entry.cron, entry.func) == ("45 3 * * *", "isp_admin.jobs.network.reconcile_network")


def test_the_nightly_check_records_what_it_found(app):
    expected = plant_every_kind()
    counts = reconcile_network()
    assert counts == {"stale_session": 5, "rejected_while_active": 2, "unknown_login": 2, "address_conflict": 1,
                      "coa_failed": 0}
    [run] = runs()
    assert (run.kind, run.status, run.triggered_by, run.as_of) == ("network_reconcile", "succeeded", "scheduler",
                                                                   today())
    assert run.counts["mismatches"] == len(expected) == 10 and run.counts["unknown_login"] == 2
    assert reconcile.last_check().id == run.id
    assert reconcile.last_counts() == {"stale_session": 5, "rejected_while_active": 2, "unknown_login": 2,
                                       "address_conflict": 1}


def test_clean_data_is_recorded_as_nothing_found(app):
    assert reconcile_network() == {**dict.fromkeys(reconcile.KINDS, 0), "coa_failed": 0}
    assert runs()[0].counts["mismatches"] == 0


def test_a_check_that_breaks_is_recorded_as_failed(app, monkeypatch):
    def broken(**_kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(reconcile, "find_mismatches", broken)
    with pytest.raises(RuntimeError):
        reconcile_network()
    [run] = runs()
    assert (run.kind, run.status) == ("network_reconcile", "failed") and "database went away" in run.error
    assert reconcile.last_check() is None


def test_the_command_lists_every_mismatch_and_exits_1(app):
    expected = plant_every_kind()
    result = flask(app, "network", "reconcile")
    assert result.exit_code == 1, result.output
    listed = {tuple(line.split()[:2]) for line in result.stdout.splitlines()}
    assert listed == expected
    assert "ghost / nobody session S-GHOST on 127.0.0.1: No subscription has the login ghost" in result.stdout
    assert "[fix: disconnect]" in result.stdout and "[fix: disconnect, resend]" in result.stdout
    assert "10 mismatches (stale_session=5, rejected_while_active=2, unknown_login=2, address_conflict=1)" \
        in result.stderr
    assert runs()[0].triggered_by == "cli"

    result = flask(app, "network", "reconcile", "--limit", "2")
    assert result.exit_code == 1
    assert "... and 3 more stale_session (--limit)." in result.stdout


def test_the_command_exits_0_when_billing_and_the_network_agree(app):
    subscription("steady")
    online("steady", "s-1", utcnow() - timedelta(hours=1))
    result = flask(app, "network", "reconcile")
    assert result.exit_code == 0, result.output
    assert "Billing and the network agree" in result.stdout
    db.session.add(CoaRequest(nas_address="192.0.2.1", username="zoe", kind="disconnect", reason="rejected",
                              status="failed", attempts=8))
    db.session.commit()
    result = flask(app, "network", "reconcile")
    assert result.exit_code == 0  # a failed request is not a mismatch, but it is said
    assert "1 CoA requests failed: see /network/?status=failed." in result.stderr


def test_the_dispatch_command_sends_the_fix_to_the_router(app):
    nas = FakeNas("nas-secret").start()
    try:
        db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", secret="nas-secret", coa_port=nas.port))
        db.session.commit()
        session = online("ghost", "s-ghost", utcnow() - timedelta(hours=1))
        reconcile.disconnect(session.radacctid)
        db.session.commit()
        result = flask(app, "network", "dispatch")
        assert result.exit_code == 0, result.output
        assert "acked=1" in result.stdout
        assert [r.first("User-Name") for r in nas.wait_for(1)] == ["ghost"]
    finally:
        nas.stop()


def test_the_dispatch_command_exits_1_when_a_request_fails(app):
    db.session.add(Nas(nasname="127.0.0.1", shortname="bras-1", secret="nas-secret", coa_port=closed_udp_port()))
    db.session.commit()
    session = online("ghost", "s-ghost", utcnow() - timedelta(hours=1))
    reconcile.disconnect(session.radacctid)
    db.session.commit()
    app.config.update(NETWORK_COA_TIMEOUT=0.1, NETWORK_COA_MAX_ATTEMPTS=1)  # the router does not answer
    result = flask(app, "network", "dispatch")
    assert result.exit_code == 1
    assert "failed=1" in result.stdout and "1 requests failed: see /network/?status=failed." in result.stderr


def test_metrics_show_the_coa_outbox_and_the_last_check(client):
    scrape = samples(client)
    assert "isp_admin_network_mismatches" not in {name for name, _labels, _value in scrape}  # never checked
    assert value(scrape, "isp_admin_coa_requests", status="failed") == 0
    plant_every_kind()
    reconcile_network()
    db.session.add(CoaRequest(nas_address="192.0.2.1", username="zoe", kind="disconnect", reason="rejected",
                              status="failed", attempts=8))
    db.session.commit()
    cache.delete(BUSINESS_CACHE_KEY)
    scrape = samples(client)
    assert value(scrape, "isp_admin_network_mismatches", kind="stale_session") == 5
    assert value(scrape, "isp_admin_network_mismatches", kind="address_conflict") == 1
    assert value(scrape, "isp_admin_coa_requests", status="failed") == 1
    assert value(scrape, "isp_admin_coa_requests", status="pending") == 0
    assert found(reconcile.find_mismatches())  # the scrape read the record; the mismatches are still there


def samples(client) -> list[tuple[str, dict, float]]:
    response = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert response.status_code == 200
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(response.get_data(as_text=True))
            for s in family.samples]


def value(scrape, name: str, **labels) -> float:
    [found_value] = [v for n, lab, v in scrape if n == name and all(lab.get(k) == x for k, x in labels.items())]
    return found_value

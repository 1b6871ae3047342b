"""The detailed health report sees real workers and the scheduler by their heartbeats, and the queue's depth."""
from __future__ import annotations

import time

from isp_admin.jobs.queue import enqueue
from tests.api.helpers import bearer
from tests.jobs.conftest import start_flask


def _report(app) -> dict:
    response = app.test_client().get("/health/detailed/", headers=bearer("admin", "health"))
    assert response.status_code == 200, response.data
    return response.json["background"]


def _wait_for(predicate, app, seconds: float = 20) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        report = _report(app)
        if predicate(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.2)


def test_workers_and_the_scheduler_are_seen_alive_and_queued_jobs_counted(jobs_app, flask_env):
    before = _report(jobs_app)
    assert before["workers"]["count"] == 0 and before["queue"]["queued"] == 0
    assert before["scheduler"] == {"alive": False, "heartbeat_age_seconds": None}
    enqueue("isp_admin.jobs.tasks.deliver_notifications", "2026-11-01")
    assert _report(jobs_app)["queue"]["queued"] == 1

    worker = start_flask(flask_env, "rq", "worker")
    scheduler = start_flask(flask_env, "rq", "scheduler", "--interval", "1")
    try:
        report = _wait_for(lambda r: r["workers"]["count"] == 1 and r["queue"]["queued"] == 0
                           and r["scheduler"]["alive"], jobs_app)
        assert report["workers"]["count"] == 1 and report["queue"]["queued"] == 0
        [alive] = report["workers"]["alive"]
        assert alive["heartbeat_age_seconds"] is not None and alive["heartbeat_age_seconds"] < 30
        assert report["scheduler"]["alive"] is True and 0 <= report["scheduler"]["heartbeat_age_seconds"] < 15
    finally:
        for process in (worker, scheduler):
            process.terminate()
            process.communicate(timeout=30)
    gone = _wait_for(lambda r: r["workers"]["count"] == 0, jobs_app)
    assert gone["workers"]["count"] == 0  # a worker that stopped cleanly unregisters

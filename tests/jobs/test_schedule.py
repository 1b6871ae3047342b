"""The nightly schedule: stable ids, re-registering never duplicates, stale entries are cancelled, and the
cron line is read in the ISP's TIMEZONE."""
from __future__ import annotations

from datetime import UTC, datetime

from isp_admin.jobs.schedule import AppScheduler, job_id, register_schedule, scheduled
from tests.jobs.conftest import run_flask

EXPECTED = [("deliver", "*/15 * * * *", "isp_admin.jobs.tasks.deliver_notifications"),
            ("network", "* * * * *", "isp_admin.jobs.network.dispatch_network"),
            ("network_reconcile", "15 2 * * *", "isp_admin.jobs.network.reconcile_network"),
            ("nightly", "30 1 * * *", "isp_admin.jobs.tasks.run_nightly"),
            ("payments", "*/10 * * * *", "isp_admin.jobs.tasks.poll_payments")]


def expected() -> list[tuple[str, str, str]]:
    return [(job_id(name), cron, func) for name, cron, func in EXPECTED]


def test_registering_twice_leaves_exactly_the_table_of_jobs(jobs_app):
    scheduler = AppScheduler()
    # A leftover of an older table: still in Redis, no longer in the code.
    stale = scheduler.schedule(datetime.now(UTC), "isp_admin.jobs.tasks.run_nightly", id=job_id("old-nightly"),
                               interval=86400)

    assert register_schedule(scheduler) == [job_id(name) for name, _, _ in EXPECTED]
    register_schedule(AppScheduler())  # a restart

    assert scheduled() == expected()
    assert scheduler.connection.zcard(scheduler.scheduled_jobs_key) == len(EXPECTED)
    assert stale.id not in scheduler
    assert not scheduler.connection.exists(stale.key)


def test_a_changed_cron_line_replaces_the_job_under_the_same_id(jobs_app):
    register_schedule(AppScheduler())
    jobs_app.config["NIGHTLY_CRON"] = "0 2 * * *"

    register_schedule(AppScheduler())

    assert [row for row in scheduled() if row[0] == job_id("nightly")] == [
        (job_id("nightly"), "0 2 * * *", "isp_admin.jobs.tasks.run_nightly")]
    assert len(scheduled()) == len(EXPECTED)


def test_the_scheduler_command_registers_the_jobs_in_the_business_time_zone(jobs_app, flask_env):
    result = run_flask(flask_env, "rq", "scheduler", "--burst", TIMEZONE="Africa/Nairobi")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"scheduled {job_id('nightly')} (Africa/Nairobi)" in result.stdout
    assert scheduled() == expected()
    scheduler = AppScheduler()
    at = datetime.fromtimestamp(scheduler.connection.zscore(scheduler.scheduled_jobs_key, job_id("nightly")), UTC)
    assert (at.hour, at.minute) == (22, 30)  # 01:30 in Nairobi (UTC+3)

    listing = run_flask(flask_env, "rq", "schedule")
    assert f"{job_id('nightly')}  30 1 * * *  isp_admin.jobs.tasks.run_nightly" in listing.stdout

"""Worker recycling as shipped: gunicorn (deploy/gunicorn.conf.py) replaces a worker after max_requests and not one
request is lost, even when every worker recycles at once and a new one takes seconds to boot.

The listening socket belongs to the master, so while no worker is ready connections wait in its backlog instead of
being refused. The app is made SLOW_START_SECONDS late in each worker (tests/ops/slow_start_app.py), so that a
replacement is slow to boot whatever the machine's load.
"""
from __future__ import annotations

import subprocess
import sys

import psutil

from isp_admin.devserver import free_port
from tests.conftest import ROOT
from tests.gunicorn_helpers import asking_continuously, server_env, wait_answering, wait_until

MAX_REQUESTS = 30


def workers_of(master: subprocess.Popen) -> set[int]:
    """The pids of the master's worker processes."""
    try:
        return {child.pid for child in psutil.Process(master.pid).children()}
    except psutil.NoSuchProcess:
        return set()


def test_gunicorn_recycles_workers_after_max_requests_without_losing_a_request(backends, tmp_path):
    port, log = free_port(), tmp_path / "gunicorn.log"
    env = server_env(backends, GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="2",
                     GUNICORN_MAX_REQUESTS=str(MAX_REQUESTS), GUNICORN_MAX_REQUESTS_JITTER="0",
                     SLOW_START_SECONDS="3", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py",
                                   "tests.ops.slow_start_app:app"], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_answering(server, base, log)
        wait_until(lambda: len(workers_of(server)) == 2, "two workers", timeout=30)
        first = workers_of(server)
        with asking_continuously(base) as tally:
            # Two replacements booted (four boots in all), past their slow boot and answering.
            wait_until(lambda: log.read_text().count("Booting worker with pid") >= 4, "two workers recycled",
                       timeout=120)
            answered = tally["answered"]
            wait_until(lambda: tally["answered"] > answered + 20, "the replacements to answer", timeout=60)
        now = workers_of(server)
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert tally["failures"] == [], (len(tally["failures"]), tally["failures"][:3])
    assert tally["answered"] > 2 * MAX_REQUESTS
    assert len(now) == 2 and now != first
    assert log.read_text().count("Autorestarting worker after current request.") >= 2

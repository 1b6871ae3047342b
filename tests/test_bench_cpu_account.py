"""bench/cpu_account.py: CPU time per process tree, reaped children included, and the per-request arithmetic."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from bench import cpu_account


def _burn(seconds: float) -> str:
    return f"import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\n"


def test_a_trees_cpu_keeps_the_time_of_children_it_has_reaped():
    # A parent that runs a busy child to completion and then sleeps: the child's CPU must still count.
    code = ("import subprocess, sys, time\n"
            f"subprocess.run([sys.executable, '-c', {_burn(0.4)!r}])\n"
            "print('reaped', flush=True)\ntime.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        root = psutil.Process(parent.pid)
        assert parent.stdout.readline().strip() == "reaped"
        assert not root.children(), "the busy child is gone"
        assert cpu_account.tree_cpu(root) >= 0.4
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_a_trees_cpu_counts_live_descendants():
    code = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {_burn(30) !r}])\ntime.sleep(30)\n"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        root = psutil.Process(parent.pid)
        deadline = time.monotonic() + 10
        while not root.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        first = cpu_account.tree_cpu(root)
        time.sleep(0.5)
        assert cpu_account.tree_cpu(root) - first >= 0.2, "the busy grandchild's time is the tree's"
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()


def test_per_request_divides_each_groups_time_by_the_requests_and_names_the_rest():
    before = cpu_account.Snapshot(wall=10.0, busy=100.0,
                                  groups={"app": 5.0, "postgres": 2.0, "redis": 1.0, "wrk": 0.5})
    after = cpu_account.Snapshot(wall=12.0, busy=103.0,
                                 groups={"app": 6.5, "postgres": 2.6, "redis": 1.1, "wrk": 0.7})
    figures = cpu_account.per_request(before, after, requests=1000)
    assert figures["ms"] == pytest.approx({"app": 1.5, "postgres": 0.6, "redis": 0.1, "wrk": 0.2, "other": 0.6})
    assert figures["total_ms"] == pytest.approx(3.0)
    assert figures["cores_busy"] == pytest.approx(1.5)
    table = cpu_account.markdown([("API list", 500.0, figures)])
    assert table[0].startswith("| target | req/s | gunicorn") and "| API list | 500 | 1.50 | 0.60 |" in table[2]


def test_the_database_and_redis_roots_are_found_by_name():
    # PostgreSQL and Redis run on this machine (tests use them): one postmaster, at least one redis-server.
    postgres = cpu_account.roots_named("postgres")
    assert postgres and all(p.name() == "postgres" and p.parent().name() != "postgres" for p in postgres)
    assert cpu_account.roots_named("redis-server")


def test_a_stopped_servers_workers_are_waited_for_and_stragglers_killed():
    from bench import http_load

    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"])
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    try:
        began = time.monotonic()
        http_load.stop_workers([stubborn.pid, quick.pid, 999_999_999], timeout=1.0)
        waited = time.monotonic() - began
        # psutil reaped both (they are this test's children), so their pids are free: gone, one of them killed.
        assert not psutil.pid_exists(stubborn.pid) and not psutil.pid_exists(quick.pid)
        assert 1.0 <= waited < 5, "waited out the timeout for the stubborn one, then killed it"
    finally:
        for process in (stubborn, quick):
            if process.poll() is None:
                process.kill()
                process.wait()

"""The server comparison keeps working: each server starts on the bare app and is measured, and the summary
reports every figure (speed is measured by bench/servers.py, not here; a full run needs a database and minutes)."""
from __future__ import annotations

import argparse
import importlib.util
import os

import pytest

from bench import servers
from bench.http_load import ensure_wrk

FIGURES = ("rps", "p95_ms", "cpu_ms_per_request")


def installed(kind: str) -> bool:
    """Whether server `kind` can run here (granian is the measured alternative, not a dependency)."""
    return kind != "granian" or importlib.util.find_spec("granian") is not None


@pytest.fixture(scope="module")
def wrk():
    try:
        return ensure_wrk()
    except RuntimeError:
        pytest.skip("wrk is not installed and could not be installed (CI installs it with apt-get)")


@pytest.mark.parametrize("kind", servers.SERVERS)
def test_each_server_serves_the_bare_app_and_is_measured_with_its_cpu_per_request(kind, wrk, tmp_path):
    if not installed(kind):
        pytest.skip(f"{kind} is not installed")
    data_file = tmp_path / "data.lua"
    data_file.write_text('return { token = "" }\n')  # the bare route reads nothing
    args = argparse.Namespace(duration=1, connections=2, timeout="2s")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN_", "PROMETHEUS_"))}
    with servers.serving(kind, servers.BARE_APP, env, tmp_path, kind) as (base, server):
        figures = servers.measure(wrk, base, server, "bare", data_file, args)
        rss = servers.worker_rss(server.pid)

    assert figures["requests"] > 0 and figures["errors"] == 0
    assert figures["cpu_ms_per_request"] > 0  # the server's own processes were found and charged
    assert len(rss) >= servers.WORKERS and all(mb > 0 for mb in rss)
    if kind == "sync":
        assert "Using worker: sync" in (tmp_path / f"{kind}.log").read_text()


def run(rps: float, p95: float, cpu: float, errors: int = 0) -> dict:
    return {"rps": rps, "p95_ms": p95, "cpu_ms_per_request": cpu, "errors": errors}


def test_the_summary_takes_medians_over_rounds_and_the_table_reports_every_figure():
    figures = {kind: {"health": [run(100 * i, 10 * i, 1.0 * i) for i in (1, 3, 2)],
                      "api_customers": [run(50 * i, 20 * i, 4.0 * i, errors=1) for i in (2, 1, 3)],
                      "bare": [run(1000 * i, i, 0.2 * i) for i in (3, 2, 1)]} for kind in ("gthread", "granian")}
    figures["granian"]["bare"] = [run(4000, 1, 0.1)] * 3
    rss = {kind: {"ours": [90.0, 94.0, 92.0], "bare": [40.0, 41.0, 42.0]} for kind in figures}
    summary = servers.summarize({"figures": figures, "rss": rss})

    assert summary["gthread"]["health"] == {"rps": 200, "p95_ms": 20, "cpu_ms_per_request": 2.0, "errors": 0,
                                            "rounds": 3, "rps_rounds": [100, 300, 200]}
    assert summary["gthread"]["api_customers"]["errors"] == 3
    assert summary["gthread"]["rss_mb"] == {"ours": 92.0, "bare": 41.0}
    table = servers.markdown(summary, argparse.Namespace(rounds=3, duration=5, connections=16, customers=300))
    assert "| granian | bare Flask route | 4,000 | 2.00 | 1.0 | 0.10 | 0 | 41 |" in table
    assert "| gthread | API customer list (token) | 100 | 1.00 | 40.0 | 8.00 | 3 | 92 |" in table
    assert len([line for line in table.splitlines() if line.startswith("| g")]) == 6


def test_sync_runs_the_deploy_config_with_the_sync_worker_and_one_thread(tmp_path):
    command, env = servers.server_command("sync", "wsgi:app", 8123, tmp_path)
    assert command[command.index("-c") + 1] == "deploy/gunicorn.conf.py"
    assert command[command.index("--worker-class") + 1] == "sync" and command[-1] == "wsgi:app"
    assert env["GUNICORN_THREADS"] == "1"  # more threads would turn sync back into gthread

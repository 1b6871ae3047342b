"""The HTTP load benchmark keeps working: a small run reports every figure (speed is measured by bench/, not here)."""
from __future__ import annotations

import shutil

import pytest

from tests.conftest import _postgres_available

pytestmark = [
    pytest.mark.skipif(not _postgres_available(), reason="the benchmark needs PostgreSQL"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="the benchmark starts its own Redis"),
]

FIGURES = ("rps", "p50_ms", "p95_ms", "p99_ms", "ratio")


def test_http_benchmark_runs_at_small_n_and_reports_every_figure(tmp_path):
    from bench import cpu_account, http_load, profile

    try:
        http_load.ensure_wrk()
    except RuntimeError:
        pytest.skip("wrk is not installed and could not be installed (CI installs it with apt-get)")
    results = tmp_path / "RESULTS.md"
    report = http_load.main(["--small", "--profile", "--results", str(results)])

    assert report["customers"] == 300 and report["cores"] >= 1 and report["commit"]
    assert report["history"]["invoices"] > 0 and report["history"]["payments"] > 0, "invoices and payments loaded"
    targets = report["targets"]
    assert set(targets) == set(http_load.TARGETS)
    for name, figures in targets.items():
        assert figures["requests"] > 0, name
        for key in FIGURES:
            assert isinstance(figures[key], float) and figures[key] >= 0, (name, key)
        assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"], name
        for key in ("errors", "non_2xx_3xx", "socket_errors", "timeouts"):
            assert isinstance(figures[key], int), (name, key)
        # Every response carries Server-Timing, so the query count is known for all of them.
        assert figures["queries_counted"] == sum(figures["statuses"].values()), name
        assert isinstance(figures["queries_max"], int) and isinstance(figures["queries_mean"], float), name
    assert targets["health"]["queries_max"] == 0
    # The yardstick is a bare Flask route on the same server, measured before and after; ratios are to their mean.
    assert len(report["bare"]) == 2 and all(b["rps"] > 0 and set(b["statuses"]) == {200} for b in report["bare"])
    assert report["yardstick_rps"] == pytest.approx(sum(b["rps"] for b in report["bare"]) / 2)
    assert targets["health"]["ratio"] == pytest.approx(targets["health"]["rps"] / report["yardstick_rps"])
    # The shipped defaults ran with limits on (budget raised to what one client of this server can send) and a
    # second pass with them off gives each target's limiter cost.
    assert report["per_minute"] >= report["bare"][0]["rps"] * 60
    assert set(report["limits_off"]) == set(targets)
    for name, figures in targets.items():
        assert 0 <= figures["limiter_cost"] <= 1, name

    # The harness itself works: the token, the session cookie, the cursor links and the ETags are all valid.
    assert targets["etag_304"]["statuses"].get(304) == targets["etag_304"]["requests"], "every conditional GET hit"
    for name in ("api_customers", "api_invoices", "staff_list", "staff_search", "customer_detail", "dashboard"):
        assert set(targets[name]["statuses"]) == {200}, (name, targets[name]["statuses"])

    assert isinstance(report["worker_rss_mb"], float) and report["worker_rss_mb"] > report["bare_rss_mb"] > 0
    assert report["peak"] is None, "--small skips the 1,000-connection run"
    goals = {g["figure"]: g for g in report["goals"]}
    assert len(goals) == 16 and all(g["met"] in (True, False) for g in report["goals"] if "peak" not in g["figure"])

    # py-spy sampled the workers under every target: shares per layer that add up, and the busiest functions.
    for name, figures in targets.items():
        sampled = figures["profile"]
        assert sampled["samples"] > 0, name
        assert abs(sum(sampled["layers"].values()) - 1) < 1e-6 and sampled["functions"], name
        assert set(sampled["inclusive"]) == {part[0] for part in profile.INCLUSIVE}, name
        assert all(0 <= share <= 1 for share in sampled["inclusive"].values()), name
    # Exempt from limits, /health/ meets only Flask-Limiter's response hooks; a token's API list counts its request
    # in Redis as well.
    limiter = {name: targets[name]["profile"]["inclusive"][profile.LIMITER] for name in ("health", "api_customers")}
    assert limiter["health"] < 0.1 and limiter["api_customers"] > 0, limiter
    assert targets["api_customers"]["profile"]["inclusive"]["database (SQLAlchemy and psycopg)"] > 0
    share = http_load.limiter_share(targets["api_customers"])
    assert 0 < share < 1
    assert any(g["figure"].startswith("rate limiter's cost, profiled") for g in report["goals"])

    # Each target's CPU per request is named by process: the app's workers, PostgreSQL, Redis, wrk, the rest.
    for name, figures in [*targets.items(), ("bare", report["bare"][0])]:
        cpu = figures["cpu"]
        assert set(cpu["ms"]) == set(cpu_account.GROUPS), name
        assert cpu["ms"]["app"] > 0 and cpu["ms"]["wrk"] > 0, (name, cpu)
        assert cpu["total_ms"] >= sum(cpu["ms"].values()) - 1e-6 and 0 < cpu["cores_busy"] <= cpu["cores"] + 0.5
    assert targets["api_customers"]["cpu"]["ms"]["postgres"] > 0, "the list's statements cost PostgreSQL CPU"
    assert targets["health"]["cpu"]["ms"]["postgres"] < targets["api_customers"]["cpu"]["ms"]["postgres"]

    section = results.read_text()
    assert "CPU per request, by process" in section and "| PostgreSQL |" in section
    assert "## HTTP load as deployed (bench/http_load.py)" in section and "limiter's cost" in section
    assert "| figure | measured | goal | |" in section
    assert "Where the time goes" in section and "| layer | share |" in section
    for label in http_load.LABELS.values():
        assert f"| {label} |" in section, label

"""The limiter benchmark keeps working: a tiny run reports every figure (how fast is measured by bench/, not here)."""
from __future__ import annotations

import pytest

from tests.factories import CustomerFactory


def test_limiter_benchmark_runs_tiny_and_reports_every_figure(app, backends):
    if not backends["redis_url"]:
        pytest.skip("the limiter under measurement counts in Redis")
    from bench import limiter_cost

    CustomerFactory.create_batch(3)

    report = limiter_cost.main(["--database-url", backends["database_url"], "--redis-url", backends["redis_url"],
                                "--repeats", "3"])

    assert set(report["cpu"]) == set(limiter_cost.CPU_TARGETS)
    for target, figures in report["cpu"].items():
        assert figures["samples"] == 3, target
        for key in ("on_us", "off_us"):
            assert isinstance(figures[key], float) and figures[key] > 0, (target, key)
        assert figures["limiter_us"] == pytest.approx(figures["on_us"] - figures["off_us"]), target
        assert isinstance(figures["limiter_share"], float), target
    assert set(report["round_trips"]) == set(limiter_cost.TRIP_TARGETS)
    for target, trips in report["round_trips"].items():
        assert isinstance(trips["round_trips"], int) and len(trips["commands"]) == trips["round_trips"], target
    assert report["round_trips"]["api_customers"]["round_trips"] >= 1  # the counter sees the limiter's Redis
    assert "| API customer list, token |" in report["markdown"] and report["commit"]

"""The staff pages benchmark keeps working: a tiny run reports every figure (speed is measured by bench/, not here)."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import _postgres_available

pytestmark = [
    pytest.mark.skipif(not _postgres_available(), reason="the benchmark needs PostgreSQL"),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="the benchmark starts its own Redis"),
]


def test_the_staff_pages_benchmark_runs_tiny_and_reports_every_figure(tmp_path):
    from bench import staff_pages

    out = tmp_path / "staff.json"
    report = staff_pages.main(["--customers", "80", "--repeats", "3", "--profile-rounds", "1", "--json", str(out)])

    assert report["customers"] == 80 and report["repeats"] == 3 and report["commit"]
    expected = set(staff_pages.LIST_PAGES) | {"search_name", "search_account"}
    assert set(report["pages"]) == set(report["statements"]) == expected
    for name, figures in report["pages"].items():
        assert figures["samples"] == 3, name
        assert 0 < figures["p25_us"] <= figures["median_us"] <= figures["p75_us"], (name, figures)
        assert 1 <= report["statements"][name] <= 3, (name, report["statements"][name])  # issue 17: ≤ 3 per list
    shares = report["profile"]
    assert shares["seconds"] > 0
    assert abs(sum(shares["layers"].values()) - 1) < 1e-6
    for layer in ("templates", "sql", "flask"):
        assert 0 < shares[layer] < 1, (layer, shares[layer])
    assert shares["functions"] and all(0 < share <= 1 for _, share in shares["functions"])
    for name in expected:
        assert f"| {name} |" in report["markdown"], name
    assert json.loads(out.read_text())["pages"].keys() == report["pages"].keys()

"""The benchmarks keep working: a small run reports every figure (speed is measured by bench/, not here)."""
from __future__ import annotations

import pytest

from tests.conftest import _postgres_available

pytestmark = pytest.mark.skipif(not _postgres_available(), reason="the benchmark needs PostgreSQL")


def test_billing_benchmark_runs_at_small_n_and_reports_every_figure(tmp_path, capsys):
    from bench import billing_run

    results = tmp_path / "RESULTS.md"
    figures = billing_run.main(["--customers", "300", "--chunk", "50", "--results", str(results)])
    assert figures["subscriptions"] > 250 and figures["invoices"] > 200
    assert figures["lines"] >= figures["subscriptions"]
    assert figures["due_after_run"] == 0, "a second plan for the same date must find nothing due"
    for key in ("run_s", "floor_s", "run_subs_per_s", "floor_subs_per_s", "ratio", "load_s", "chunks"):
        assert figures[key] > 0, key
    row = results.read_text().splitlines()[-1]
    assert row.startswith("| ") and "| 300 |" in row
    assert "subscriptions in" in capsys.readouterr().out

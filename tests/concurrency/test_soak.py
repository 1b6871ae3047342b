"""A short mixed-load soak in `make test` (bench/soak.py at CI size): 16 API clients writing at random to a couple
of dozen customers while billing runs go through a real RQ worker, then every invariant holds."""
from __future__ import annotations

import pytest

from bench import soak

pytestmark = pytest.mark.slow


def test_sixteen_clients_writing_at_random_while_billing_runs_leave_a_sound_ledger(app, backends, tmp_path):
    if not backends["database_url"].startswith("postgresql") or not backends["redis_url"]:
        pytest.skip("the soak needs PostgreSQL and Redis")

    result = soak.soak(backends["database_url"], backends["redis_url"], tmp_path, clients=16, customers=20,
                       seconds=25)

    print(f"\nsoak: {result['requests']} requests {result['by_status']}, {result['double_clicks']} double clicks, "
          f"{len(result['billing_runs'])} billing runs; by operation: {result['statuses']}")
    failed = soak.problems(result)
    assert not failed, "\n".join(failed[:40] + result["server_errors_logged"])
    assert result["requests"] > 200 and result["billing_runs"], result
    assert all(run.get("status") == "succeeded" for run in result["billing_runs"]), result["billing_runs"]

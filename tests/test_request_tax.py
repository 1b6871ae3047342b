"""The per-request tax benchmark keeps working: a tiny run reports every figure (speed is measured by bench/)."""
from __future__ import annotations

import pytest

from bench import request_tax
from tests.conftest import REDIS_URL, _redis_available

# The shipped defaults count in Redis; without one (a laptop) the run counts in memory and says so.
REDIS = REDIS_URL if _redis_available() else ""

# The layers a deployed /health/ goes through: each must be found and named in the breakdown.
LAYERS = {"security headers (Talisman, CORP/COOP, no-store)", "rate limiter (Flask-Limiter)",
          "request logging (structlog)", "metrics (prometheus_client)", "request id",
          "timing (X-Response-Time, Server-Timing)", "session and sign-in (cookie session, Flask-Login, actor)",
          "CSRF (Flask-WTF)", "edge checks", "database session (autocommit reads, teardown)", "ProxyFix", "the view",
          "Flask and Werkzeug themselves"}


def test_a_tiny_run_reports_both_routes_their_ratio_and_every_layer(capsys):
    result = request_tax.main(["--requests", "30", "--repeats", "3", "--profile-requests", "30",
                               "--redis-url", REDIS])

    for route in ("bare", "health"):
        assert len(result[route]["rounds"]) == 3 and all(us > 0 for us in result[route]["rounds"]), route
        assert min(result[route]["rounds"]) <= result[route]["median_us"] <= max(result[route]["rounds"])
    assert result["ratio"] == pytest.approx(result["health"]["median_us"] / result["bare"]["median_us"])
    layers = {entry["layer"]: entry for entry in result["profile"]["layers"]}
    assert set(layers) >= LAYERS, LAYERS - set(layers)
    assert all(layers[name]["us"] > 0 for name in LAYERS - {"ProxyFix"})  # ProxyFix's own share may round to 0
    assert "other" not in layers, [row["hook"] for row in result["profile"]["rows"] if row["layer"] == "other"]
    assert sum(entry["share"] for entry in layers.values()) == pytest.approx(1.0)  # every profiled µs is placed
    settings = result["settings"]  # the shipped defaults, as create_app read them from a production environment
    assert (settings["APP_ENV"], settings["RATELIMIT_ENABLED"], settings["LOG_LEVEL"], settings["LOG_FORMAT"],
            settings["PROXY_FIX_X_FOR"]) == ("production", True, "INFO", "json", 1)
    assert settings["RATELIMIT_STORAGE_URI"].startswith("redis://" if REDIS else "memory://")
    printed = capsys.readouterr().out
    assert "| our /health/ |" in printed and "| bare Flask route |" in printed
    assert all(f"| {name} |" in printed for name in LAYERS)

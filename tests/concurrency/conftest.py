"""Fixtures of the concurrency suite: one gunicorn per module (two workers of eight threads) on this worker's
PostgreSQL test database, and an admin token. The `app` fixture empties the database before each test, so every
test makes its data after the server is up; the server reads it from the database like any other client."""
from __future__ import annotations

import json
import os

import pytest

from tests.concurrency.racing import Server
from tests.gunicorn_helpers import api_token, gunicorn

WORKERS, THREADS = 2, 8


@pytest.fixture(scope="module")
def server(backends, tmp_path_factory):
    """gunicorn (gthread, 2 × 8) serving wsgi:app on the test database, for the whole module."""
    if not backends["database_url"].startswith("postgresql"):
        pytest.skip("the concurrency suite needs PostgreSQL (row locks, constraints under real concurrency)")
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    with gunicorn(backends, log, workers=WORKERS, threads=THREADS) as base:
        yield Server(base, log)


@pytest.fixture
def headers(app):
    """The Authorization header of an admin's token with every write scope (read, write, billing)."""
    header, _ = api_token("admin", "read,write,billing", name="concurrency suite")
    return header


@pytest.fixture
def tally(request):
    """Statuses per operation summed over a test's rounds; printed, and appended as one JSON line to
    $CONCURRENCY_TALLY_FILE when set (the figures of a report)."""
    totals: dict[str, dict[int, int]] = {}

    def add(outcome) -> None:
        for label, statuses in outcome.tally().items():
            for status, count in statuses.items():
                totals.setdefault(label, {})[status] = totals.setdefault(label, {}).get(status, 0) + count

    yield add
    print(f"\n{request.node.name}: {totals}")
    path = os.environ.get("CONCURRENCY_TALLY_FILE")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"test": request.node.nodeid, "statuses": totals}) + "\n")

"""Concurrent misses of one expensive cached value compute it once, and the dashboard's figures and trend use that."""
from __future__ import annotations

import threading
import time

import pytest

from isp_admin.services.platform import single_flight


def _together(count: int, work) -> list:
    """Run `work(i)` in `count` threads released at once; return their results (or exceptions)."""
    start = threading.Barrier(count)
    results: list = [None] * count

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001  (the test inspects what each thread got)
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_sixteen_threads_missing_together_compute_once_and_all_get_the_value():
    store: dict = {}
    computed = []

    def compute_and_store():
        computed.append(1)
        time.sleep(0.2)  # long enough that every thread has missed and is waiting
        store["k"] = "figures"
        return "figures"

    results = _together(16, lambda _i: single_flight.read_or_compute_once("k", lambda: store.get("k"),
                                                                     compute_and_store))
    assert results == ["figures"] * 16
    assert len(computed) == 1
    assert single_flight.pending() == 0, "no lock is left behind"


def test_different_keys_do_not_wait_for_each_other():
    started = threading.Event()
    release = threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return "slow"

    worker = threading.Thread(target=lambda: single_flight.read_or_compute_once("a", lambda: None, slow))
    worker.start()
    assert started.wait(5)
    began = time.monotonic()
    assert single_flight.read_or_compute_once("b", lambda: None, lambda: "fast") == "fast"
    assert time.monotonic() - began < 1, "key b did not wait for key a"
    release.set()
    worker.join()
    assert single_flight.pending() == 0


def test_when_the_computing_thread_fails_the_next_one_computes():
    store: dict = {}
    attempts = []

    def compute_and_store():
        attempts.append(1)
        time.sleep(0.05)
        if len(attempts) == 1:
            raise RuntimeError("the database went away")
        store["k"] = 42
        return 42

    results = _together(4, lambda _i: single_flight.read_or_compute_once("k", lambda: store.get("k"),
                                                                    compute_and_store))
    assert sum(isinstance(r, RuntimeError) for r in results) == 1
    assert results.count(42) == 3 and len(attempts) == 2
    assert single_flight.pending() == 0


@pytest.fixture
def counted_dashboard(monkeypatch):
    """Count the dashboard's expensive computations (the money figures and the year's trend)."""
    from isp_admin.services.reporting import dashboard

    calls = {"figures": 0, "trend": 0}
    real_figures, real_trend = dashboard._figures, dashboard._trend

    def figures(as_of):
        calls["figures"] += 1
        time.sleep(0.2)  # as at 100,000 customers: every other request arrives while this one computes
        return real_figures(as_of)

    def trend(as_of):
        calls["trend"] += 1
        time.sleep(0.2)
        return real_trend(as_of)

    monkeypatch.setattr(dashboard, "_figures", figures)
    monkeypatch.setattr(dashboard, "_trend", trend)
    return calls


def test_eight_staff_opening_a_cold_dashboard_together_compute_it_once(app, login, counted_dashboard):
    from isp_admin.extensions import cache

    clients = [app.test_client() for _ in range(8)]
    for client in clients:
        login("billing", client_=client)
    cache.clear()

    pages = _together(8, lambda i: clients[i].get("/"))  # each staff member's own session, all missing at once
    assert counted_dashboard == {"figures": 1, "trend": 1}
    assert all(not isinstance(p, Exception) and p.status_code == 200 for p in pages)
    assert single_flight.pending() == 0

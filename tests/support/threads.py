"""Work released together in threads, each callable in its own app context and database session."""
from __future__ import annotations

import threading

from isp_admin.extensions import db


def in_threads(app, *work):
    """Run each callable in its own thread, app context and DB session, released together by a barrier.

    Each callable runs its transaction and commits; an exception is rolled back and returned in its place.
    """
    barrier = threading.Barrier(len(work))
    results: list = [None] * len(work)

    def worker(index, fn):
        with app.app_context():
            try:
                barrier.wait(timeout=10)
                results[index] = fn()
                db.session.commit()
            except Exception as exc:  # noqa: BLE001 - handed back to the test to assert on
                db.session.rollback()
                results[index] = exc

    threads = [threading.Thread(target=worker, args=(i, fn)) for i, fn in enumerate(work)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    return results

"""Faults injected into real gunicorn workers (a config of hooks), and the 503 a request that met one answers."""
from __future__ import annotations

import json

# A gunicorn config file: the test's own hooks, installed in each worker before it serves (post_worker_init), so
# the app under test is the production wsgi:app, unchanged. Selected per request by the X-Test-Fault header.
FAULTS_CONF = '''
import os
import pathlib
import time


def post_worker_init(worker):
    from flask import g, has_request_context, request
    from sqlalchemy import event, text

    from isp_admin.extensions import db

    app = worker.wsgi
    with app.app_context():
        engine = db.engine
    if os.environ.get("TEST_FAULTS_UNGUARDED"):  # to check these tests can fail: take the teardown guard out
        app.teardown_appcontext_funcs[:] = [
            f for f in app.teardown_appcontext_funcs if getattr(f, "__name__", "") != "remove_session_safely"]

    def stall(_conn, _cursor, statement, *_args):
        # "stall": hold the request inside its work transaction, just before its payment is inserted.
        if (has_request_context() and request.headers.get("X-Test-Fault") == "stall"
                and statement.lstrip().upper().startswith("INSERT INTO PAYMENTS")):
            pathlib.Path(request.headers["X-Test-Marker"]).write_text(str(os.getpid()))
            time.sleep(60)

    event.listen(engine, "before_cursor_execute", stall)

    from flask_limiter._extension import RequestLimit

    reset_at = RequestLimit.reset_at.fget

    def failing_reset_at(self):
        # "limiter": the limiter's storage fails when it reads the window for its headers, after the view.
        if g.get("test_fault") == "limiter":
            raise ConnectionError("rate-limit storage unreachable (injected)")
        return reset_at(self)

    RequestLimit.reset_at = property(failing_reset_at)

    @app.before_request
    def remember_fault():
        g.test_fault = request.headers.get("X-Test-Fault")

    @app.teardown_appcontext
    def end_the_sessions_connection(_exc):
        # "teardown": registered last, so it runs first: leave the request's session in a transaction whose
        # backend PostgreSQL has ended, as a cut during the response would; session.remove() must roll it back.
        if g.get("test_fault") == "teardown-dead":
            # With the database already gone there is no backend left to end: make the session's close fail
            # as a rollback on a dead connection does.
            import psycopg
            from sqlalchemy.exc import OperationalError

            def close():
                raise OperationalError("ROLLBACK", None, psycopg.OperationalError("server closed the connection"))

            db.session().close = close
            return
        if g.get("test_fault") != "teardown":
            return
        try:
            pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar()
            with engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
                deadline = time.monotonic() + 5  # until the backend is gone, so the rollback meets a dead one
                while time.monotonic() < deadline and other.scalar(
                        text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}):
                    time.sleep(0.01)
        except Exception:
            pass  # the database is down already: the session's rollback fails on its own
'''


def faults_conf(tmp_path) -> dict[str, str]:
    """The environment that makes gunicorn load FAULTS_CONF (gunicorn reads GUNICORN_CMD_ARGS)."""
    path = tmp_path / "faults_conf.py"
    path.write_text(FAULTS_CONF)
    return {"GUNICORN_CMD_ARGS": f"--config {path}"}


def assert_unavailable(answer) -> None:
    """The 503 envelope (never a 500, never gunicorn's HTML page)."""
    status, headers, raw = answer
    assert status == 503 and headers["Content-Type"].startswith("application/json"), raw[:300]
    assert json.loads(raw)["error"]["code"] == "SERVICE_UNAVAILABLE"

"""Health endpoints for load balancers, orchestrators and the operator on call.

/health/ and /health/live/ touch nothing (a process that answers is alive); /health/ready/ checks what a request
needs (the database, Redis when configured, the schema at the code's migration head) and names what fails;
/health/detailed/ (admins, or a token with the `health` scope) reports every component's latency and the
background machinery: queue depths, worker and scheduler heartbeats, the last nightly run, pool use, host.
"""
from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata

import redis
from flask import Blueprint, current_app, jsonify
from flask_login import current_user
from sqlalchemy import text

from isp_admin.access import PUBLIC, access
from isp_admin.database import migrations_directory, read_migrations
from isp_admin.extensions import db, talisman
from isp_admin.services.platform.job_runs import last_nightly_run

bp = Blueprint("health", __name__, url_prefix="/health")
# Probes speak plain HTTP to the container; redirecting them to HTTPS would mark a healthy pod dead.
_plain_http = talisman(force_https=False)
STARTED = time.time()
PROBE_TIMEOUT = 2  # seconds: a probe that hangs is worse than one that says "down"


@lru_cache(maxsize=1)
def _scripts() -> tuple[str | None, frozenset[str]]:
    """The code's migration head and every revision it ships (read once per process, without Alembic)."""
    return read_migrations(migrations_directory(current_app))


def migration_head() -> str | None:
    """The newest migration revision the code ships."""
    return _scripts()[0]


def known_revisions() -> frozenset[str]:
    """Every migration revision the code ships."""
    return _scripts()[1]


def _timed(check) -> dict:
    started = time.perf_counter()
    try:
        detail = check() or {}
        ok = detail.pop("ok", True)
        error = detail.pop("error", None)
    except Exception as exc:  # noqa: BLE001  (any failure of a dependency is "down", with its reason)
        ok, detail, error = False, {}, f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    result = {"ok": ok, "latency_ms": round((time.perf_counter() - started) * 1000, 1), **detail}
    if error:
        result["error"] = error
    return result


def _database() -> dict:
    try:
        revision = db.session.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        db.session.rollback()  # end the probe's transaction; a failed one must not poison the session
    head = migration_head()
    if revision != head and (revision is None or revision in known_revisions()):
        return {"ok": False, "revision": revision, "head": head,
                "error": f"schema at {revision or 'nothing'}, code expects {head}: run `flask db upgrade`"}
    # A revision this code does not know comes from a newer release whose migration ran first (a rolling
    # upgrade): the old pods keep serving until they are replaced, rather than all going unready at once.
    return {"revision": revision, **({"ahead_of_code": True} if revision != head else {})}


def _redis_client() -> redis.Redis | None:
    url = current_app.config.get("REDIS_URL")
    if not url:
        return None
    return redis.Redis.from_url(url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT)


def _redis() -> dict:
    client = _redis_client()
    try:
        client.ping()
    finally:
        client.close()
    return {}


def _checks() -> dict[str, dict]:
    checks = {"database": _timed(_database)}
    if current_app.config.get("REDIS_URL"):
        checks["redis"] = _timed(_redis)
    return checks


@bp.get("/")
@access(PUBLIC)
@_plain_http
def health():
    """Answer at once without touching any dependency."""
    return jsonify(status="ok")


@bp.get("/live/")
@access(PUBLIC)
@_plain_http
def live():
    """Report that the process is alive."""
    return jsonify(status="ok")


@bp.get("/ready/")
@access(PUBLIC)
@_plain_http
def ready():
    """Report whether this instance can serve (database, Redis if configured, schema at head); 503 names what fails.

    With READY_REQUIRES_REDIS off, a Redis outage is reported (under "degraded") without failing readiness: pages
    still render without Redis, so an orchestrator need not pull every web instance at once.
    """
    checks = _checks()
    failing = sorted(name for name, check in checks.items() if not check["ok"])
    degraded = []
    if "redis" in failing and not current_app.config.get("READY_REQUIRES_REDIS", True):
        failing.remove("redis")
        degraded.append("redis")
    body = {"status": "unavailable" if failing else ("degraded" if degraded else "ok"), "failing": failing,
            "degraded": degraded,
            "checks": {name: {k: v for k, v in check.items() if k in ("ok", "latency_ms", "error")}
                       for name, check in checks.items()}}
    response = jsonify(body)
    response.status_code = 503 if failing else 200
    response.headers["Cache-Control"] = "no-store"
    if failing:
        response.headers["Retry-After"] = "5"
    return response


def _allowed_detail():
    """Admins signed in, or a bearer token with the `health` scope; else the refusal to send."""
    from flask import request

    from isp_admin.api.auth import bearer_secret, check_token
    from isp_admin.errors import error_response

    if bearer_secret() is not None or request.headers.get("Authorization"):
        return check_token("health", "health.view")
    if current_user.is_authenticated:
        if current_user.role == "admin":
            return None
        return error_response(403, "PERMISSION_DENIED", "Only admins may see the detailed health report.")
    return error_response(401, "AUTHENTICATION_REQUIRED", "Sign in as an admin, or send a token with the health "
                          "scope.", headers={"WWW-Authenticate": 'Bearer realm="isp-admin"'})


def _background(connection: redis.Redis) -> dict:
    from rq import Queue, Worker
    from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

    name = current_app.config["RQ_QUEUE"]
    queue = Queue(name, connection=connection)
    now = datetime.now(UTC)
    workers = []
    for worker in Worker.all(queue=queue):
        beat = worker.last_heartbeat
        workers.append({"name": worker.name, "state": worker.get_state(),
                        "heartbeat_age_seconds": round((now - beat.replace(tzinfo=UTC)).total_seconds(), 1)
                        if beat else None})
    from isp_admin.jobs.schedule import heartbeat_key

    beat = connection.get(heartbeat_key(name))
    return {
        "queue": {"name": name, "queued": queue.count,
                  "started": StartedJobRegistry(queue=queue).count,
                  "scheduled": ScheduledJobRegistry(queue=queue).count,
                  "failed": FailedJobRegistry(queue=queue).count},
        "workers": {"count": len(workers), "alive": workers},
        # The scheduler's heartbeat key expires a little after its interval: present means one is running.
        "scheduler": {"alive": beat is not None,
                      "heartbeat_age_seconds": round(time.time() - float(beat), 1) if beat else None},
    }


def _last_nightly() -> dict | None:
    run = last_nightly_run()
    if run is None:
        return None
    return {"id": run.id, "as_of": run.as_of.isoformat(), "status": run.status,
            "started_at": run.started_at.isoformat(), "error": run.error,
            "finished_at": run.finished_at.isoformat() if run.finished_at else None}


def _pool() -> dict:
    pool = db.engine.pool
    if not hasattr(pool, "checkedout"):
        return {"kind": pool.__class__.__name__}
    return {"kind": pool.__class__.__name__, "size": pool.size(), "checked_out": pool.checkedout(),
            "overflow": pool.overflow(), "capacity": pool.size() + max(getattr(pool, "_max_overflow", 0), 0)}


def _version() -> str:
    try:
        return metadata.version("isp-admin")
    except metadata.PackageNotFoundError:
        return "unknown"


@bp.get("/detailed/")
@access(PUBLIC)  # guarded below: admins by session, or a token with the health scope
@_plain_http
def detailed():
    """Report every component with its latency, the background machinery, the pool, version, uptime and host."""
    from isp_admin.observability.metrics import host_figures

    refused = _allowed_detail()
    if refused is not None:
        return refused
    checks = _checks()
    background = None
    client = _redis_client()
    if client is not None and checks.get("redis", {}).get("ok"):
        timed = _timed(lambda: _background(client))
        background = timed
        client.close()
    try:
        nightly = _last_nightly()
    except Exception:  # noqa: BLE001  (the database check above already says why)
        db.session.rollback()
        nightly = None
    memory, disk = host_figures(current_app.instance_path)
    failing = sorted(name for name, check in checks.items() if not check["ok"])
    response = jsonify({
        "status": "unavailable" if failing else "ok", "failing": failing, "checks": checks,
        "background": background, "last_nightly_run": nightly, "database_pool": _pool(),
        "version": _version(), "uptime_seconds": round(time.time() - STARTED, 1), "pid": os.getpid(),
        "host": {"memory_used_ratio": round(memory, 4), "disk_free_ratio": round(disk, 4)},
    })
    response.status_code = 503 if failing else 200
    response.headers["Cache-Control"] = "no-store"
    return response

"""Health endpoints for load balancers and orchestrators."""
from flask import Blueprint, jsonify
from sqlalchemy import text

from isp_admin.extensions import db, talisman
from isp_admin.web.access import PUBLIC, access

bp = Blueprint("health", __name__, url_prefix="/health")
# Probes speak plain HTTP to the container; redirecting them to HTTPS would mark a healthy pod dead.
_plain_http = talisman(force_https=False)


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
    """Report whether the database answers; 503 names the failing component."""
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means not ready
        db.session.rollback()
        return jsonify(status="unavailable", failing=["database"]), 503
    return jsonify(status="ok")

"""Health endpoints for load balancers and orchestrators."""
from flask import Blueprint, jsonify
from sqlalchemy import text

from isp_admin.extensions import db
from isp_admin.web.access import PUBLIC, access

bp = Blueprint("health", __name__, url_prefix="/health")


@bp.get("/")
@access(PUBLIC)
def health():
    """Answer at once without touching any dependency."""
    return jsonify(status="ok")


@bp.get("/live/")
@access(PUBLIC)
def live():
    """Report that the process is alive."""
    return jsonify(status="ok")


@bp.get("/ready/")
@access(PUBLIC)
def ready():
    """Report whether the database answers; 503 names the failing component."""
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001 - any failure means not ready
        db.session.rollback()
        return jsonify(status="unavailable", failing=["database"]), 503
    return jsonify(status="ok")

"""The dashboard: customers by status, subscriptions by plan, MRR."""
from flask import Blueprint, render_template

from isp_admin.services.dashboard import dashboard_summary
from isp_admin.web.access import access

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@access("view")
def index():
    """Show the business at a glance."""
    return render_template("dashboard/index.html", summary=dashboard_summary())

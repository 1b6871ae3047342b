"""The dashboard: customers by status, subscriptions by plan, MRR, and customers the last run left out."""
from flask import Blueprint, render_template

from isp_admin.services.reporting.dashboard import dashboard_summary, last_run_failures
from isp_admin.web.access import access, can

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@access("view")
def index():
    """Show the business at a glance."""
    # Those who run billing (admin, billing) are told when the last run left customers out, to fix and re-run.
    failures = last_run_failures() if can("billing.run") else None
    return render_template("dashboard/index.html", summary=dashboard_summary(), run_failures=failures)

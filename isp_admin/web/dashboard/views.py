"""The dashboard: money owed and collected, MRR and its trend, the last nightly run and what needs someone."""
from flask import Blueprint, render_template

from isp_admin.services.platform.clock import today
from isp_admin.services.reporting.dashboard import dashboard_figures, last_run_failures, mrr_trend, operations
from isp_admin.web.access import access, can

bp = Blueprint("dashboard", __name__)


@bp.get("/")
@access("view")
def index():
    """Show the business at a glance, each figure a link to the list behind it."""
    # Those who run billing (admin, billing) are told when the last run left customers out, to fix and re-run.
    failures = last_run_failures() if can("billing.run") else None
    day = today()
    return render_template("dashboard/index.html", figures=dashboard_figures(day), trend=mrr_trend(day),
                           ops=operations(), run_failures=failures)

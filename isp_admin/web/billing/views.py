"""Billing operations: tonight's run (dry run, then run), job runs with live progress, notifications."""
from __future__ import annotations

from datetime import datetime
from functools import partial

import redis
from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm

from isp_admin.errors import AppError
from isp_admin.extensions import db
from isp_admin.jobs.queue import start_run
from isp_admin.services.billing import operations as billing_queries
from isp_admin.services.billing import steps
from isp_admin.services.messaging import delivery
from isp_admin.services.platform import job_runs
from isp_admin.services.platform.audit_words import count_words, kind_words
from isp_admin.services.platform.clock import today
from isp_admin.unit_of_work import discard
from isp_admin.web.access import access
from isp_admin.web.billing.forms import NotificationFilterForm, RunDateForm, StartRunForm
from isp_admin.web.templating import money, page_size
from isp_admin.web.unit_of_work import REFUSED, perform

bp = Blueprint("billing", __name__, url_prefix="/billing")


@bp.get("/run")
@access("view")
def run():
    """Show what the nightly run would do for a date, step by step, without writing anything."""
    form = RunDateForm(request.args)
    if not form.validate():
        flash("Pick a valid date.", "danger")
        return render_template("billing/run.html", form=form, preview=None, start_form=StartRunForm()), 400
    as_of = form.as_of.data or today()
    form.as_of.data = as_of
    try:
        previews = steps.preview(steps.NIGHTLY, as_of)
    except AppError as exc:  # a date outside the window (services/platform/bounds.py): a form error, not an error page
        form.as_of.errors = [*form.as_of.errors, *exc.details.values()]
        return render_template("billing/run.html", form=form, preview=None, start_form=StartRunForm()), 422
    finally:
        discard()  # a dry run: whatever the planners touched (the chain applies each step) is thrown away
    return render_template("billing/run.html", form=form, preview=previews, summary=steps.summarize(previews),
                           as_of=as_of, today=today(), start_form=StartRunForm(formdata=None, as_of=as_of))


@bp.post("/run")
@access("billing.run")
def start():
    """Start the nightly run for a date in the background and follow it on its job page."""
    form = StartRunForm()
    if not form.validate_on_submit():
        flash("Pick the date to run for.", "danger")
        return redirect(url_for("billing.run"))
    as_of = form.as_of.data
    # start_run commits the run itself before it enqueues (workers must find it), so the unit of work's commit
    # finds nothing left; it still turns QueueUnavailable (Redis down or not configured) into the flash.
    job_run = perform(start_run, kind="nightly", as_of=as_of, triggered_by=current_user.email,
                      failure="The run could not be started: {}")
    if job_run is not REFUSED:
        flash(f"Nightly run for {as_of} started.", "success")
        return redirect(url_for("billing.job", job_run_id=job_run.id))
    return redirect(url_for("billing.run", as_of=as_of.isoformat()))


@bp.get("/jobs/")
@access("view")
def jobs():
    """List billing runs, newest first; runs stuck past the lease are flagged."""
    from isp_admin.jobs import recovery  # here: RQ loads only when the jobs pages are used

    page = billing_queries.list_job_runs(size=page_size(), after=request.args.get("after"),
                                         before=request.args.get("before"))
    return render_template("billing/jobs.html", page=page, stuck=recovery.stuck_ids(page.rows),
                           kind_words=kind_words, counts_of=partial(count_words, money=money),
                           action_form=FlaskForm())


@bp.get("/jobs/<id:job_run_id>")
@access("view")
def job(job_run_id: int):
    """Show one run; its progress updates live while it runs."""
    from isp_admin.jobs import recovery

    run, children = billing_queries.job_run_detail(job_run_id)
    return render_template("billing/job.html", run=run, children=children, stuck=bool(recovery.stuck_ids([run])),
                           recovery_log=job_runs.recovery_log(run), lease=recovery.lease_seconds(),
                           failures=job_runs.failures(run), failed=job_runs.failed_count(run),
                           counts=count_words(run.counts, money), kind_words=kind_words, action_form=FlaskForm())


@bp.post("/jobs/<id:job_run_id>/resume")
@access("billing.run")
def resume_job(job_run_id: int):
    """Resume what a run lost (the same recovery the workers' sweep runs); a healthy or finished run is left be."""
    from isp_admin.jobs import recovery

    back = redirect(url_for("billing.job", job_run_id=job_run_id))
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return back
    job_runs.get_run(job_run_id)  # 404 for an unknown run
    # No unit of work here: recover_run is an edge of its own (the workers' sweep runs it) and commits per step.
    try:
        outcome = recovery.recover_run(job_run_id, manual=True)
    except AppError as exc:  # QueueUnavailable: Redis is down or not configured
        db.session.rollback()
        flash(f"The run could not be resumed: {exc.message}", "danger")
    except redis.RedisError as exc:
        db.session.rollback()
        flash(f"The run could not be resumed: Redis does not answer ({exc.__class__.__name__}).", "danger")
    else:
        flash(outcome.message, {"resumed": "success", "failed": "warning"}.get(outcome.action, "info"))
    return back


@bp.get("/jobs/<id:job_run_id>/progress.json")
@access("view")
def progress(job_run_id: int):
    """Return a run's progress as JSON for the page's poller."""
    report = job_runs.progress(job_run_id)
    # The poller shows the counts as the page does, in words ("Invoiced: $1,204.50"), not as stored.
    report["count_words"] = [{"label": label, "value": value}
                             for label, value in count_words(report["counts"], money)]
    for step in report["steps"]:
        step["label"] = kind_words(step["kind"])
    finished = report["finished_at"] and datetime.fromisoformat(report["finished_at"])
    report["finished_words"] = f"{finished:%d %b %Y %H:%M:%S} UTC" if finished else None
    response = jsonify(report)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/notifications/")
@access("view")
def notifications():
    """List outbox emails by status, failed first; failed ones can be retried."""
    form = NotificationFilterForm(request.args)
    if not form.validate():
        flash("Unknown status.", "danger")
        return redirect(url_for("billing.notifications"))
    status = form.status.data or "failed"
    page = billing_queries.list_notifications(status=None if status == "all" else status, size=page_size(),
                                              after=request.args.get("after"), before=request.args.get("before"))
    return render_template("billing/notifications.html", form=form, status=status, page=page,
                           action_form=FlaskForm())


@bp.post("/notifications/<id:notification_id>/retry")
@access("billing.edit")
def retry_notification(notification_id: int):
    """Try a failed email again now."""
    back = redirect(request.referrer if _same_site(request.referrer) else url_for("billing.notifications"))
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return back
    if perform(delivery.retry_notification, notification_id) is not REFUSED:
        flash("Notification queued again: the next delivery run sends it.", "success")
    return back


def _same_site(url: str | None) -> bool:
    """Whether a Referer points back into this site (so redirecting there is safe)."""
    return bool(url) and url.startswith(request.host_url)

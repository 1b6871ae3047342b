"""Network pages: who is online now (open accounting sessions), and disconnecting one session."""
from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm

from isp_admin.services.network import coa
from isp_admin.services.network import sessions as network_sessions
from isp_admin.web.access import access
from isp_admin.web.network.views import bp
from isp_admin.web.templating import page_size
from isp_admin.web.unit_of_work import REFUSED, perform


@bp.get("/sessions")
@access("view")
def sessions():
    """Open sessions, newest first: search by login or IP, page by cursor; each linked to its subscription."""
    q = request.args.get("q", "")
    page = network_sessions.online_now(q, size=page_size(), after=request.args.get("after") or None,
                                       before=request.args.get("before") or None)
    return render_template("network/sessions.html", page=page, q=q.strip(), action_form=FlaskForm())


@bp.post("/sessions/<id:session_id>/disconnect")
@access("network.operate")
def disconnect(session_id: int):
    """Queue a Disconnect-Request for one open session; back to its subscription, or to the online list."""
    network_sessions.get_session(session_id)  # an unknown id is a 404, not a flash
    back = url_for("network.sessions")
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
    elif (request_ := perform(coa.disconnect_session, session_id)) is not REFUSED:
        flash("Disconnect queued: it is sent to the router within a minute.", "success")
        if request_.subscription_id:
            back = url_for("subscriptions.detail", subscription_id=request_.subscription_id, _anchor="network")
    return redirect(back)

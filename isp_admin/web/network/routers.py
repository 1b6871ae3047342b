"""Routers (NAS) pages: list, add, edit, remove. The shared secret is written here and never shown again."""
from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from flask_wtf import FlaskForm

from isp_admin.services.network import nas as nas_service
from isp_admin.web.access import access
from isp_admin.web.network.forms import RouterEditForm, RouterForm
from isp_admin.web.network.views import bp
from isp_admin.web.unit_of_work import REFUSED, perform

RESTART = "Restart FreeRADIUS so it accepts requests from it (it reads its routers when it starts)."


@bp.get("/routers")
@access("view")
def routers():
    """The routers FreeRADIUS answers and the CoA outbox sends to."""
    return render_template("network/routers.html", rows=nas_service.list_routers(), action_form=FlaskForm())


@bp.route("/routers/new", methods=["GET", "POST"])
@access("network.manage")
def router_create():
    """Add a router."""
    form = RouterForm()
    if form.validate_on_submit():
        router = perform(nas_service.create_router, form=form, **form.values())
        if router is not REFUSED:
            flash(f"Router {router.shortname} ({router.nasname}) added. {RESTART}", "success")
            return redirect(url_for("network.routers"))
    return render_template("network/router_form.html", form=form, router=None)


@bp.route("/routers/<id:nas_id>/edit", methods=["GET", "POST"])
@access("network.manage")
def router_edit(nas_id: int):
    """Edit a router; its secret is replaced only when a new one is typed."""
    router = nas_service.get_router(nas_id)
    form = RouterEditForm(obj=router)  # a Router carries no secret, so the field starts empty
    if form.validate_on_submit():
        saved = perform(nas_service.update_router, router.id, form=form, **form.values())
        if saved is not REFUSED:
            flash(f"Router {saved.shortname} saved. CoA uses it at once; a new address or secret reaches "
                  "FreeRADIUS when it restarts.", "success")
            return redirect(url_for("network.routers"))
    return render_template("network/router_form.html", form=form, router=router)


@bp.post("/routers/<id:nas_id>/delete")
@access("network.manage")
def router_delete(nas_id: int):
    """Remove a router no pending Disconnect/CoA request is waiting for."""
    if not FlaskForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
    elif perform(nas_service.delete_router, nas_id) is not REFUSED:
        flash(f"Router removed. {RESTART.replace('accepts', 'stops accepting')}", "success")
    return redirect(url_for("network.routers"))

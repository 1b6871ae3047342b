"""The network policy page: what each suspension reason does, the walled garden's attributes, the reject message."""
from __future__ import annotations

from flask import flash, redirect, render_template, url_for

from isp_admin.services.network import settings as network_settings
from isp_admin.web.access import access
from isp_admin.web.network.forms import GroupAttributeForm, GroupAttributeRemoveForm, SettingsForm
from isp_admin.web.network.views import bp
from isp_admin.web.unit_of_work import REFUSED, perform


def _page(form: SettingsForm, attribute_form: GroupAttributeForm):
    return render_template("network/settings.html", form=form, attribute_form=attribute_form,
                           remove_form=GroupAttributeRemoveForm(),
                           attributes=network_settings.list_group_attributes())


@bp.get("/settings")
@access("view")
def settings():
    """Show the policy per suspension reason and the fixed groups' attributes."""
    return _page(SettingsForm(data=network_settings.current_settings()), GroupAttributeForm())


@bp.post("/settings")
@access("network.manage")
def settings_save():
    """Save the policy and the walled garden's attributes (they apply at each customer's next login)."""
    form = SettingsForm()
    if form.validate_on_submit():
        changed = perform(network_settings.save_settings, form.policies(), form=form, **form.fixed())
        if changed is not REFUSED:
            flash("Saved: it applies at each customer's next login." if changed else "Nothing changed.", "success")
            return redirect(url_for("network.settings"))
    return _page(form, GroupAttributeForm(formdata=None))


@bp.post("/settings/attributes")
@access("network.manage")
def group_attribute_add():
    """Add an attribute to the walled-garden or rejected group."""
    form = GroupAttributeForm()
    if form.validate_on_submit() and perform(network_settings.add_group_attribute, form.groupname.data,
                                             form.kind.data, form.attribute.data, form.op.data, form.value.data,
                                             form=form) is not REFUSED:
        flash("Attribute added: it applies at each customer's next login.", "success")
        return redirect(url_for("network.settings"))
    return _page(SettingsForm(formdata=None, data=network_settings.current_settings()), form)


@bp.post("/settings/attributes/remove")
@access("network.manage")
def group_attribute_remove():
    """Remove an attribute from the walled-garden or rejected group."""
    form = GroupAttributeRemoveForm()
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "danger")
    elif perform(network_settings.remove_group_attribute, form.groupname.data, form.kind.data,
                 form.attribute.data) is not REFUSED:
        flash("Attribute removed.", "success")
    return redirect(url_for("network.settings"))

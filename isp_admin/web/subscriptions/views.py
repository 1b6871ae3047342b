"""Subscription pages: add to a customer, change plan, suspend, resume, cancel, network ids."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, make_response, redirect, render_template, request, url_for
from markupsafe import Markup, escape

from isp_admin.errors import Conflict
from isp_admin.services.customers import accounts as customer_service
from isp_admin.services.customers import subscriptions as subscription_service
from isp_admin.services.customers.plans import get_plan, plan_choices
from isp_admin.services.network import coa, credentials
from isp_admin.services.network import sessions as network_sessions
from isp_admin.services.platform.audit import entity_history
from isp_admin.services.platform.clock import today
from isp_admin.web.access import access, can
from isp_admin.web.subscriptions.forms import (
    AddSubscriptionForm,
    ApproveCatchUpForm,
    CancelForm,
    ChangePlanForm,
    NetworkActionForm,
    NetworkForm,
    ResumeForm,
    SuspendForm,
)
from isp_admin.web.templating import money
from isp_admin.web.unit_of_work import REFUSED, perform

bp = Blueprint("subscriptions", __name__)


@bp.route("/customers/<id:customer_id>/subscriptions/new", methods=["GET", "POST"])
@access("subscriptions.edit")
def create(customer_id: int):
    """Add a subscription to a customer."""
    customer = customer_service.get_customer(customer_id)
    form = AddSubscriptionForm.for_new()
    if form.validate_on_submit():
        added = perform(
            subscription_service.add_subscription,
            customer.id, form.plan_id.data, form.start_date.data, form.billing_day.data,
            form.pppoe_username.data, form.static_ip.data, form.cpe_mac.data, form.price_override_cents.data,
            form=form,
        )
        if added is not REFUSED:
            flash("Subscription added.", "success")
            return redirect(url_for("customers.detail", customer_id=customer.id))
    return render_template("subscriptions/new.html", form=form, customer=customer)


@bp.get("/subscriptions/<id:subscription_id>")
@access("view")
def detail(subscription_id: int):
    """Show one subscription with the forms that change it."""
    sub = subscription_service.get_subscription(subscription_id)
    return _render_detail(sub)


def _render_detail(sub, new_password: str | None = None, refusal: str | None = None, **forms):
    customer = customer_service.get_customer(sub.customer_id)
    plan = get_plan(sub.plan_id)
    change = forms.get("change") or ChangePlanForm(formdata=None)
    change.plan_id.choices = [c for c in plan_choices(active_only=True) if c[0] != sub.plan_id]
    cancel = forms.get("cancel") or CancelForm(formdata=None, end_date=today())
    network = forms.get("network") or NetworkForm(formdata=None, obj=sub)
    return render_template(
        "subscriptions/detail.html", sub=sub, customer=customer, plan=plan, change_form=change,
        suspend_form=forms.get("suspend") or SuspendForm(formdata=None), resume_form=ResumeForm(formdata=None),
        approve_form=ApproveCatchUpForm(formdata=None),
        cancel_form=cancel, network_form=network, history=entity_history("subscriptions", sub.id),
        panel=network_sessions.network_panel(sub.id), action_form=NetworkActionForm(formdata=None),
        new_password=new_password, refusal=refusal,
    )


def _act(sub_id: int, form, action, form_key: str, done: str = "Subscription updated."):
    """Run one state change from a posted form: commit and redirect, or re-render with errors."""
    sub = subscription_service.get_subscription(sub_id)
    if form.validate_on_submit():
        if perform(action, sub.id, form=form) is not REFUSED:
            flash(done, "success")
            return redirect(url_for("subscriptions.detail", subscription_id=sub.id))
    else:
        flash("Please correct the highlighted fields.", "danger")
    sub = subscription_service.get_subscription(sub_id)
    return _render_detail(sub, **{form_key: form}), 422


# Issuing an invoice or a credit note is billing's work (recording payments, voiding): support may change a plan
# only while the change moves no money (the period is not billed yet).
MONEY_PERMISSION = "billing.edit"


def _act_with_amounts(sub_id: int, form, form_key: str, *, preview, change, done, what: str, nothing: str,
                      money_permission: str | None = None):
    """Run a change that may issue money documents: show their amounts (a dry run of the change itself) and ask
    for confirmation first; once confirmed, issue exactly those amounts or refuse."""
    sub = subscription_service.get_subscription(sub_id)
    confirmed, amounts = form.confirmed(), form.amounts.data or ""
    form.confirm.data = form.amounts.data = ""  # a form shown again starts over: preview, then confirm
    if not form.validate_on_submit():
        flash("Please correct the highlighted fields.", "danger")
        return _render_detail(sub, **{form_key: form}), 422
    may_issue = money_permission is None or can(money_permission)
    if not (confirmed and may_issue):
        previewed = perform(preview, sub.id, form=form, keep=lambda _: False)  # nothing of it is kept
        if previewed is REFUSED:
            return _render_detail(subscription_service.get_subscription(sub_id), **{form_key: form}), 422
        if previewed.documents and not may_issue:
            refusal = (f"{what} would issue {_documents_words(previewed)}. Issuing invoices and credit notes is for "
                       "billing staff (the billing or admin role): ask them to make this change.")
            return _render_detail(subscription_service.get_subscription(sub_id), refusal=refusal,
                                  **{form_key: form}), 403
        if previewed.documents:
            form.confirm.data, form.amounts.data = "1", previewed.amounts
            return render_template("subscriptions/confirm.html", sub=sub, form=form, outcome=previewed, what=what,
                                   customer=customer_service.get_customer(sub.customer_id),
                                   plan=get_plan(sub.plan_id), action=request.path)

    def issue_as_shown(subscription_id: int):
        outcome = change(subscription_id)
        if outcome.documents and not may_issue:
            raise Conflict("This change now issues money documents; only billing staff may make it.")
        if outcome.amounts != amounts:
            raise Conflict("The amounts changed since you checked them: check them again, then confirm.")
        return outcome

    outcome = perform(issue_as_shown, sub.id, form=form)
    if outcome is REFUSED:
        return _render_detail(subscription_service.get_subscription(sub_id), **{form_key: form}), 422
    flash(done(outcome) + " " + (_documents_issued(outcome) if outcome.documents else nothing), "success")
    return redirect(url_for("subscriptions.detail", subscription_id=sub.id))


def _documents_words(outcome) -> str:
    """'an invoice for $82.77 and a credit note for $29.81' (a preview's documents have no number yet)."""
    names = {"invoice": "an invoice", "credit_note": "a credit note"}
    return " and ".join(f"{names[d.kind]} for {money(d.total_cents, d.currency)}" for d in outcome.documents)


def _documents_issued(outcome) -> Markup:
    """Say, with links, which invoice and credit note a change issued, and for how much."""
    parts = []
    for d in outcome.documents:
        name = "Invoice" if d.kind == "invoice" else "credit note"
        endpoint, arg = ("invoices.detail", "invoice_id") if d.kind == "invoice" else \
            ("credit_notes.detail", "credit_note_id")
        number = escape(d.number)
        if endpoint in current_app.view_functions:
            number = Markup('<a href="{}">{}</a>').format(url_for(endpoint, **{arg: d.id}), d.number)
        parts.append(Markup("{} {} for {}").format(name, number, money(d.total_cents, d.currency)))
    sentence = Markup(" and ").join(parts)
    return Markup("{}{} issued.").format(sentence[:1].upper(), sentence[1:])


@bp.post("/subscriptions/<id:subscription_id>/change-plan")
@access("subscriptions.edit")
def change_plan(subscription_id: int):
    """Move a subscription to another plan; a change that bills or credits money needs billing staff."""
    form = ChangePlanForm()
    form.plan_id.choices = plan_choices(active_only=True)
    return _act_with_amounts(
        subscription_id, form, "change", what="This plan change", money_permission=MONEY_PERMISSION,
        nothing="No invoice or credit note was issued: the current period is not billed yet, so its bill will be "
                "at the new price.",
        preview=lambda i: subscription_service.preview_change_plan(i, form.plan_id.data),
        change=lambda i: subscription_service.change_plan_documents(i, form.plan_id.data),
        done=lambda outcome: f"Plan changed to {outcome.plan_name}.")


@bp.post("/subscriptions/<id:subscription_id>/suspend")
@access("subscriptions.edit")
def suspend(subscription_id: int):
    """Suspend a subscription by hand."""
    form = SuspendForm()
    return _act(subscription_id, form, lambda i: subscription_service.suspend(i, form.reason.data), "suspend",
                done=f"Subscription suspended ({form.reason.data}).")


@bp.post("/subscriptions/<id:subscription_id>/resume")
@access("subscriptions.edit")
def resume(subscription_id: int):
    """Resume a manual or vacation suspension."""
    return _act(subscription_id, ResumeForm(), subscription_service.resume, "resume", done="Subscription resumed.")


@bp.post("/subscriptions/<id:subscription_id>/approve-catch-up")
@access("billing.edit")
def approve_catch_up(subscription_id: int):
    """Approve a catch-up billing held for review."""
    return _act(subscription_id, ApproveCatchUpForm(), subscription_service.approve_catch_up, "approve",
                done="Catch-up approved: the next billing run bills every period due.")


@bp.post("/subscriptions/<id:subscription_id>/cancel")
@access("subscriptions.edit")
def cancel(subscription_id: int):
    """Cancel a subscription as of a date."""
    form = CancelForm()
    return _act_with_amounts(
        subscription_id, form, "cancel", what="This cancellation",
        nothing="No credit note was issued: no day from then on was billed.",
        preview=lambda i: subscription_service.preview_cancel(i, form.end_date.data),
        change=lambda i: subscription_service.cancel_documents(i, form.end_date.data),
        done=lambda outcome: f"Subscription cancelled: {form.end_date.data:%d %b %Y} is its first day without "
                             "service.")


@bp.post("/subscriptions/<id:subscription_id>/network")
@access("subscriptions.edit")
def network(subscription_id: int):
    """Change the PPPoE login, static IP or CPE MAC."""
    form = NetworkForm()
    return _act(subscription_id, form, lambda i: subscription_service.update_network(
        i, form.pppoe_username.data, form.static_ip.data, form.cpe_mac.data), "network",
        done="Network identifiers saved.")


@bp.post("/subscriptions/<id:subscription_id>/credentials")
@access("subscriptions.edit")
def set_password(subscription_id: int):
    """Generate (or regenerate) the PPPoE password and show it on this one answer, never again."""
    sub = subscription_service.get_subscription(subscription_id)
    back = redirect(url_for("subscriptions.detail", subscription_id=sub.id, _anchor="network"))
    if not NetworkActionForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return back
    password = perform(credentials.set_password, sub.id)
    if password is REFUSED:
        return back
    # Rendered into this response only: a flash would keep it in the (signed, not encrypted) session cookie.
    response = make_response(_render_detail(subscription_service.get_subscription(sub.id), new_password=password))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/subscriptions/<id:subscription_id>/coa-resend")
@access("network.operate")
def resend_to_router(subscription_id: int):
    """Send the open sessions what the network says now (the plan's CoA, or a Disconnect)."""
    sub = subscription_service.get_subscription(subscription_id)
    if not NetworkActionForm().validate_on_submit():
        flash("The form expired; please try again.", "danger")
    elif (requests := perform(coa.resend_for_subscription, sub.id)) is not REFUSED:
        flash(f"{len(requests)} request(s) queued for the router: sent within a minute.", "success")
    return redirect(url_for("subscriptions.detail", subscription_id=sub.id, _anchor="network"))


# The portal's plan change requests are decided on pages of this blueprint; imported last, as they import `bp`.
from isp_admin.web.subscriptions import requests  # noqa: E402, F401

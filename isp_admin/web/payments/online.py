"""Online payments, the staff side: provider settings, payments in flight, refunds, notifications resolved by hand.

Routes on the payments blueprint (views.py imports this module once it has made the blueprint).
"""
from __future__ import annotations

from flask import flash, redirect, render_template, url_for

from isp_admin.services.billing import payments as payment_service
from isp_admin.services.payments import queries as payment_queries
from isp_admin.services.payments import refunds, review
from isp_admin.services.payments import settings as provider_settings
from isp_admin.services.payments.providers.base import ProviderError
from isp_admin.services.platform.clock import today
from isp_admin.web.access import access
from isp_admin.web.payments.forms import ProviderSwitchForm, RecordRefundForm, RefundForm, ResolveEventForm
from isp_admin.web.payments.views import bp, render_detail
from isp_admin.web.unit_of_work import REFUSED, perform


@bp.route("/providers", methods=["GET", "POST"])
@access("payments.providers")
def providers():
    """Show each payment provider's readiness (never its secrets) and switch it on or off for customers."""
    form = ProviderSwitchForm()
    status = 200
    if form.is_submitted():
        if form.validate() and perform(provider_settings.set_enabled, form.provider.data,
                                       form.enabled.data == "1") is not REFUSED:
            flash("Payment provider enabled: customers can pay with it now." if form.enabled.data == "1"
                  else "Payment provider disabled: customers no longer see it.", "success")
            return redirect(url_for("payments.providers"))
        if form.errors:
            flash("The form expired or was not valid; please try again.", "danger")
        status = 422
    return render_template("payments/providers.html", statuses=provider_settings.provider_statuses(),
                           form=ProviderSwitchForm(formdata=None),
                           webhook_url=url_for("webhooks.signed", name="stripe", _external=True)), status


@bp.get("/in-flight")
@access("view")
def in_flight():
    """List payments started online and not settled, recent failures, and notifications waiting on a person."""
    return render_template("payments/in_flight.html", flight=payment_queries.in_flight(),
                           resolve_form=ResolveEventForm(formdata=None))


@bp.post("/events/<id:event_id>/resolve")
@access("billing.edit")
def resolve_event(event_id: int):
    """Record what was done about an unmatched or held notification; it leaves the list."""
    form = ResolveEventForm()
    if not form.validate_on_submit():
        flash(next(iter(form.errors.values()))[0], "danger")
    elif perform(review.resolve_event, event_id, form.resolution.data) is not REFUSED:
        flash("Notification marked resolved.", "success")
    return redirect(url_for("payments.in_flight"))


@bp.post("/<id:payment_id>/refund")
@access("billing.edit")
def refund(payment_id: int):
    """Refund an online payment at its provider; its invoices reopen."""
    payment_service.get_payment(payment_id)
    form = RefundForm()
    if not form.validate_on_submit():
        flash("Say why the payment is refunded.", "danger")
        return render_detail(payment_id, refund_form=form, status=422)
    back = redirect(url_for("payments.detail", payment_id=payment_id))
    try:
        refunded = perform(refunds.refund_payment, payment_id, form.reason.data, today(), failure="Not refunded: {}")
    except ProviderError as exc:  # the provider refused or could not be reached: nothing was recorded
        flash(f"Not refunded: {exc}", "danger")
        return back
    if refunded is not REFUSED:
        flash("Payment refunded at the provider; the invoices it paid are open again.", "success")
    return back


@bp.post("/<id:payment_id>/record-refund")
@access("billing.edit")
def record_refund(payment_id: int):
    """Record a refund made in the provider's own dashboard (one without refunds by API)."""
    payment_service.get_payment(payment_id)
    form = RecordRefundForm()
    if not form.validate_on_submit():
        flash("Give the provider's refund reference and the reason.", "danger")
        return render_detail(payment_id, record_refund_form=form, status=422)
    if perform(refunds.record_refund, payment_id, form.reference.data, form.reason.data, today(), form=form) is REFUSED:
        return render_detail(payment_id, record_refund_form=form, status=422)
    flash("Refund recorded; the invoices the payment paid are open again.", "success")
    return redirect(url_for("payments.detail", payment_id=payment_id))

"""Paying online from the portal: choose an invoice and a provider, go to the provider, watch the payment land.

GET /portal/pay is also where the walled garden sends a customer suspended for non-payment: signed out, they
sign in and come back here.
"""
from __future__ import annotations

from flask import current_app, flash, g, redirect, render_template, url_for

from isp_admin.access import PUBLIC, access
from isp_admin.portal.forms import PayForm
from isp_admin.portal.guard import portal_login_required
from isp_admin.portal.views import bp
from isp_admin.portal.work import REFUSED, perform
from isp_admin.security import allow_form_action
from isp_admin.services.payments import attempts as payment_attempts
from isp_admin.services.payments.providers.registry import offered
from isp_admin.services.platform.clock import today
from isp_admin.services.portal import queries as portal_queries
from isp_admin.unit_of_work import commit_once

REFRESH_SECONDS = 5  # the status page reloads itself this often while the payment is pending


def _pay_form(providers) -> PayForm:
    form = PayForm()
    form.provider.choices = [(p.name, p.label) for p in providers]
    return form


def _external(endpoint: str, **values) -> str:
    # Providers call and send payers back to PUBLIC_URL when it is set, never to whatever Host this request named.
    base = current_app.config.get("PUBLIC_URL")
    return base.rstrip("/") + url_for(endpoint, **values) if base else url_for(endpoint, **values, _external=True)


def _company() -> dict:
    config = current_app.config
    return {"name": config["COMPANY_NAME"], "address": config["COMPANY_ADDRESS"], "email": config["COMPANY_EMAIL"]}


@bp.get("/pay")
@access(PUBLIC)
@portal_login_required
def pay():
    """What is open to pay, and how: a provider to choose, or (none offered) how else to pay."""
    providers = offered()
    allow_form_action(origin for provider in providers for origin in provider.hosted_origins())
    return render_template("portal/pay.html", invoices=portal_queries.open_invoices(g.customer.id),
                           providers=providers, form=_pay_form(providers), company=_company(), today=today(),
                           push=any(p.flow == "push" for p in providers))


@bp.post("/pay/<id:invoice_id>")
@access(PUBLIC)
@portal_login_required
def pay_invoice(invoice_id: int):
    """Start paying one invoice with the chosen provider: off to its hosted page, or a push to the phone."""
    invoice = portal_queries.payable_invoice(g.customer.id, invoice_id)
    form = _pay_form(offered())
    if not form.validate_on_submit():
        flash("Choose how to pay." if form.provider.choices else "Online payment is not available.", "danger")
        return redirect(url_for("portal.pay"))
    started = perform(payment_attempts.create_attempt, g.customer.id, form.provider.data, invoice_id=invoice.id,
                      phone=(form.phone.data or "").strip() or None, form=form)
    if started is REFUSED:
        return redirect(url_for("portal.pay"))
    attempt, token = started
    status_url = _external("portal.attempt_status", public_id=attempt.public_id)
    if token is None:  # a recent identical attempt (a double click): its page once its launch stores it, or status
        wait = float(current_app.config.get("PAYMENTS_HTTP_TIMEOUT") or 10) + 2
        return redirect(attempt.redirect_url or payment_attempts.hosted_page(attempt.id, wait) or status_url)
    # Committed before the provider is called: a notification racing our redirect finds the attempt.
    attempt = commit_once(
        payment_attempts.launch_attempt, attempt.id, return_url=status_url,
        cancel_url=_external("portal.pay"),
        callback_url=_external("webhooks.callback", name=attempt.provider, public_id=attempt.public_id, token=token),
        description=f"Invoice {invoice.number}")
    if attempt.status == "failed":
        flash(f"The payment could not be started: {attempt.failure_reason}", "danger")
    elif attempt.redirect_url:
        return redirect(attempt.redirect_url)
    else:
        flash("Check your phone and enter your PIN to approve the payment.", "info")
    return redirect(url_for("portal.attempt_status", public_id=attempt.public_id))


@bp.get("/payments/attempt/<public_id>")
@access(PUBLIC)
@portal_login_required
def attempt_status(public_id: str):
    """Where a payment stands; reloads itself while pending, shows the payment once it has landed."""
    attempt, payment = portal_queries.attempt(g.customer.id, public_id)
    return render_template("portal/attempt.html", attempt=attempt, payment=payment,
                           refresh=REFRESH_SECONDS if attempt.status == "pending" else None)

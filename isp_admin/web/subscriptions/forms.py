"""Subscription forms: add, change plan, suspend, resume, cancel, network identifiers."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateField, IntegerField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from isp_admin.services.customers.plans import plan_choices
from isp_admin.services.platform.clock import today
from isp_admin.web.fields import MoneyField


class AddSubscriptionForm(FlaskForm):
    """A new subscription for a customer."""

    plan_id = SelectField("Plan", coerce=int, validators=[DataRequired()])
    # InputRequired: DataRequired would answer "required" to a date that does not exist, such as 30 February.
    start_date = DateField("Start date", validators=[InputRequired()])
    billing_day = IntegerField("Billing day (1–31)", validators=[Optional(), NumberRange(1, 31)],
                               description="Empty: the start date's day. 29–31 bill on the last day of short months.")
    pppoe_username = StringField("PPPoE username", validators=[Optional(), Length(max=64)])
    static_ip = StringField("Static IP", validators=[Optional(), Length(max=45)])
    cpe_mac = StringField("CPE MAC", validators=[Optional(), Length(max=64)])
    price_override_cents = MoneyField("Price override", validators=[Optional()],
                                      description="Empty: the plan's price.")
    submit = SubmitField("Add subscription")

    @classmethod
    def for_new(cls, formdata=None) -> AddSubscriptionForm:
        """Build the form with the active plans and today's date."""
        form = cls(formdata=formdata) if formdata is not None else cls()
        form.plan_id.choices = plan_choices(active_only=True)
        if form.start_date.data is None and not form.is_submitted():
            form.start_date.data = today()
        return form


class ChangePlanForm(FlaskForm):
    """Move a subscription to another plan."""

    plan_id = SelectField("New plan", coerce=int, validators=[DataRequired()])
    submit = SubmitField("Change plan")


class SuspendForm(FlaskForm):
    """Suspend by hand."""

    reason = SelectField("Reason", choices=[("manual", "Manual"), ("vacation", "Vacation")])
    submit = SubmitField("Suspend")


class ResumeForm(FlaskForm):
    """Resume a manual or vacation suspension."""

    submit = SubmitField("Resume")


class ApproveCatchUpForm(FlaskForm):
    """Approve a catch-up that billing held for review."""

    submit = SubmitField("Approve the catch-up")


class CancelForm(FlaskForm):
    """Cancel as of a date."""

    end_date = DateField("End date", validators=[InputRequired()])
    submit = SubmitField("Cancel subscription")


class NetworkForm(FlaskForm):
    """PPPoE login, static IP and CPE MAC."""

    pppoe_username = StringField("PPPoE username", validators=[Optional(), Length(max=64)])
    static_ip = StringField("Static IP", validators=[Optional(), Length(max=45)])
    cpe_mac = StringField("CPE MAC", validators=[Optional(), Length(max=64)])
    submit = SubmitField("Save")


class NetworkActionForm(FlaskForm):
    """The network card's buttons (generate a password, re-send to the router, disconnect): a CSRF token only."""

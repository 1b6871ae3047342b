"""Subscription forms: add, change plan, suspend, resume, cancel, network identifiers."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateField, HiddenField, IntegerField, SelectField, StringField, SubmitField
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


class ConfirmedChange:
    """A change that issues money documents is sent twice: first to see their amounts, then to confirm them."""

    confirm = HiddenField()
    # The amounts the person confirmed (Outcome.amounts): if the change would now issue others, it is refused.
    amounts = HiddenField(validators=[Length(max=500)])

    def confirmed(self) -> bool:
        """Whether this is the confirming post (amounts seen), not the first one."""
        return self.confirm.data == "1"


class ChangePlanForm(ConfirmedChange, FlaskForm):
    """Move a subscription to another plan."""

    plan_id = SelectField("New plan", coerce=int, validators=[DataRequired()],
                          description="Changes today. When the current period is billed, you will see the credit "
                                      "for the old plan's unused days and the invoice for the rest on the new one, "
                                      "and confirm them.")
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


class CancelForm(ConfirmedChange, FlaskForm):
    """Cancel as of a date: the first day the customer is not served (and not charged)."""

    # The service's meaning (customers.subscriptions.cancel): end_date is the first unserved day, credited.
    end_date = DateField("First day without service", validators=[InputRequired()],
                         description="Service stops now. The customer pays up to the day before this date; days "
                                     "from this date to the end of the billed period come back as a credit note. "
                                     "Today or earlier.")
    submit = SubmitField("Cancel subscription")


class NetworkForm(FlaskForm):
    """PPPoE login, static IP and CPE MAC."""

    pppoe_username = StringField("PPPoE username", validators=[Optional(), Length(max=64)])
    static_ip = StringField("Static IP", validators=[Optional(), Length(max=45)])
    cpe_mac = StringField("CPE MAC", validators=[Optional(), Length(max=64)])
    submit = SubmitField("Save")


class NetworkActionForm(FlaskForm):
    """The network card's buttons (generate a password, re-send to the router, disconnect): a CSRF token only."""

"""The portal's forms: sign-in, password links and passwords, profile, plan change, payment, statement period."""
from flask_wtf import FlaskForm
from wtforms import BooleanField, DateField, EmailField, PasswordField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, EqualTo, Length, Optional


class LoginForm(FlaskForm):
    """Account number or email, and password."""

    identifier = StringField("Account number or email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=512)])


class LinkRequestForm(FlaskForm):
    """Ask for a link to set (or reset) the portal password."""

    identifier = StringField("Account number or email", validators=[DataRequired(), Length(max=254)])


class SetPasswordForm(FlaskForm):
    """Choose a password through an emailed link."""

    password = PasswordField("New password", validators=[DataRequired(), Length(min=12, max=512)])
    confirm = PasswordField("Repeat the new password",
                            validators=[DataRequired(), EqualTo("password", "The passwords differ.")])


class ChangePasswordForm(FlaskForm):
    """Change the portal password."""

    current_password = PasswordField("Current password", validators=[DataRequired(), Length(max=512)])
    password = PasswordField("New password", validators=[DataRequired(), Length(min=12, max=512)])
    confirm = PasswordField("Repeat the new password",
                            validators=[DataRequired(), EqualTo("password", "The passwords differ.")])


class ProfileForm(FlaskForm):
    """Contact details and notification preferences."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    phone = StringField("Phone", validators=[Optional(), Length(max=30)])
    email_reminders = BooleanField("Email me payment reminders")
    email_receipts = BooleanField("Email me a receipt when an online payment lands")


class PlanChangeForm(FlaskForm):
    """Ask to move a subscription to another plan."""

    # Not checked against the choices here: another customer's id must be a 404 (the service's NotFound).
    subscription_id = SelectField("Subscription", coerce=int, validators=[DataRequired()], validate_choice=False)
    plan_id = SelectField("New plan", coerce=int, validators=[DataRequired()])
    note = TextAreaField("Note for our staff (optional)", validators=[Optional(), Length(max=500)])


class PayForm(FlaskForm):
    """Pay an invoice with one of the providers offered."""

    provider = SelectField("Pay with", validators=[DataRequired()])
    phone = StringField("Phone number to charge (mobile money)", validators=[Optional(), Length(max=20)])


class StatementForm(FlaskForm):
    """The statement's period (from the query string)."""

    class Meta:
        csrf = False  # a GET filter: nothing is changed

    start = DateField("From", validators=[Optional()])
    end = DateField("To", validators=[Optional()])

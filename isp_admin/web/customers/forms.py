"""Customer forms: profile editing and the list's filters."""
from flask_wtf import FlaskForm
from wtforms import EmailField, SelectField, StringField, SubmitField, TextAreaField
from wtforms.validators import DataRequired, Email, Length, Optional, Regexp

from isp_admin.models.customers import CUSTOMER_STATUSES
from isp_admin.services.customers.accounts import SORTS


class CustomerForm(FlaskForm):
    """A customer's profile."""

    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    email = EmailField("Email", validators=[Optional(), Email(), Length(max=254)])
    phone = StringField("Phone", validators=[Optional(), Length(max=40)])
    service_address = TextAreaField("Service address", validators=[Optional(), Length(max=1000)])
    billing_address = TextAreaField("Billing address (if different)", validators=[Optional(), Length(max=1000)])
    tax_id = StringField("Tax id", validators=[Optional(), Length(max=40)])
    notes = TextAreaField("Notes", validators=[Optional(), Length(max=5000)])
    submit = SubmitField("Save")

    def values(self) -> dict:
        """Return the profile fields for the customer service."""
        return {name: getattr(self, name).data for name in
                ("name", "email", "phone", "service_address", "billing_address", "tax_id", "notes")}


class CustomerFilterForm(FlaskForm):
    """Search, filters and sort for the customer list (GET, no CSRF)."""

    class Meta:
        csrf = False

    q = StringField("Search", validators=[Optional(), Length(max=100)])
    status = SelectField("Status", choices=[("", "Any status")] + [(s, s.title()) for s in CUSTOMER_STATUSES],
                         validators=[Optional()])
    # Choices are filled after the list query (they come with its count); the value is checked as a plan id here,
    # and an id of no plan simply matches no customer.
    plan = SelectField("Plan", choices=[], validators=[Optional(), Regexp(r"^[1-9][0-9]{0,9}$",
                                                                          message="Not a plan.")],
                       validate_choice=False)
    sort = SelectField("Sort", choices=[(k, k.title()) for k in SORTS if not k.startswith("-")], default="name",
                       validators=[Optional()])

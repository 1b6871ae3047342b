"""Staff administration forms."""
from flask_wtf import FlaskForm
from wtforms import EmailField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, Email, Length

from isp_admin.models.users import ROLES

ROLE_CHOICES = [(r, r.title()) for r in ROLES]


class InviteUserForm(FlaskForm):
    """Invite a staff member: they choose their own password through an emailed link."""

    email = EmailField("Email", validators=[DataRequired(), Email(), Length(max=254)])
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    role = SelectField("Role", choices=ROLE_CHOICES)
    submit = SubmitField("Send invitation")


class RoleForm(FlaskForm):
    """Change a user's role."""

    role = SelectField("Role", choices=ROLE_CHOICES)
    submit = SubmitField("Change role")

"""The API token form."""
from flask_wtf import FlaskForm
from wtforms import IntegerField, SelectMultipleField, StringField, SubmitField
from wtforms.validators import DataRequired, Length, NumberRange
from wtforms.widgets import CheckboxInput, ListWidget

from isp_admin.models.users import TOKEN_SCOPES


class TokenForm(FlaskForm):
    """A token's name, scopes and lifetime."""

    name = StringField("Name", validators=[DataRequired(), Length(max=120)], description="What the token is for.")
    scopes = SelectMultipleField("Scopes", choices=[(s, s) for s in TOKEN_SCOPES], default=["read"],
                                 validators=[DataRequired()], widget=ListWidget(prefix_label=False),
                                 option_widget=CheckboxInput())
    expires_days = IntegerField("Expires after (days)", default=90, validators=[DataRequired(), NumberRange(1, 365)])
    submit = SubmitField("Create token")

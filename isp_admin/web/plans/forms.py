"""The plan form, and the forms of a plan's extra RADIUS attributes."""
from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from isp_admin.services.network.settings import ATTRIBUTE_KINDS, ATTRIBUTE_OPS
from isp_admin.web.fields import MoneyField, PercentField


class PlanForm(FlaskForm):
    """A service plan's speeds, cap, prices and tax."""

    code = StringField("Code", validators=[DataRequired(), Length(max=32)], description="e.g. FIBER-100")
    name = StringField("Name", validators=[DataRequired(), Length(max=120)])
    # InputRequired, not DataRequired, which would answer "required" to "0" or "fast" and hide the real error.
    download_mbps = IntegerField("Download (Mbps)", validators=[InputRequired(), NumberRange(1, 1_000_000)])
    upload_mbps = IntegerField("Upload (Mbps)", validators=[InputRequired(), NumberRange(1, 1_000_000)])
    data_cap_gb = IntegerField("Data cap (GB)", validators=[Optional(), NumberRange(1, 10_000_000)],
                               description="Empty: unlimited.")
    monthly_price_cents = MoneyField("Monthly price (excl. tax)", validators=[InputRequired()])  # 0 is a price
    setup_fee_cents = MoneyField("Setup fee", validators=[Optional()])
    tax_rate_bp = PercentField("Tax rate (%)", validators=[Optional()])
    submit = SubmitField("Save")

    def values(self) -> dict:
        """Return the plan fields for the plan service."""
        return {
            "code": self.code.data, "name": self.name.data, "download_mbps": self.download_mbps.data,
            "upload_mbps": self.upload_mbps.data, "data_cap_gb": self.data_cap_gb.data,
            "monthly_price_cents": self.monthly_price_cents.data,
            "setup_fee_cents": self.setup_fee_cents.data or 0, "tax_rate_bp": self.tax_rate_bp.data or 0,
        }


class PlanAttributeForm(FlaskForm):
    """One extra RADIUS attribute of a plan's group (another vendor's rate, a session timeout, …)."""

    kind = SelectField("Kind", choices=[(k, k) for k in ATTRIBUTE_KINDS], default="reply",
                       description="reply: sent to the router; check: must match the login's request.")
    attribute = StringField("Attribute", validators=[DataRequired()], description="e.g. Session-Timeout")
    op = SelectField("Operator", choices=[(o, o) for o in ATTRIBUTE_OPS], default=":=")
    value = StringField("Value", validators=[DataRequired()])
    add = SubmitField("Add attribute")


class PlanAttributeRemoveForm(FlaskForm):
    """Which of a plan's attributes to remove."""

    kind = HiddenField(validators=[DataRequired()])
    attribute = HiddenField(validators=[DataRequired()])

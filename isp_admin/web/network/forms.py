"""The network forms: a router (NAS), the suspension policy with the fixed groups' attributes, a group attribute."""
from flask_wtf import FlaskForm
from wtforms import HiddenField, IntegerField, PasswordField, RadioField, SelectField, StringField, SubmitField
from wtforms.validators import DataRequired, InputRequired, Optional

from isp_admin.services.network.nas import DEFAULT_COA_PORT, NAS_TYPES
from isp_admin.services.network.settings import ATTRIBUTE_KINDS, ATTRIBUTE_OPS, GROUPS

ACTION_CHOICES = [("walled_garden", "Walled garden"), ("reject", "Reject")]
# Each suspension reason, with what it means for the customer: the page says it beside the choice.
REASONS = {
    "non_payment": ("Suspended for non-payment",
                    "An overdue customer past their grace period. The walled garden lets them reach the pay page."),
    "manual": ("Suspended by staff", "Someone suspended the subscription by hand (abuse, a dispute, a request)."),
    "vacation": ("Paused for a holiday", "The customer asked to pause their service while away."),
}


class RouterForm(FlaskForm):
    """A router: its address (FreeRADIUS's client address), name, vendor, shared secret and CoA port."""

    nasname = StringField("IP address", validators=[DataRequired()],
                          description="The address its RADIUS requests come from, e.g. 192.0.2.1.")
    shortname = StringField("Name", validators=[DataRequired()], description="e.g. bras-nairobi-1")
    type = SelectField("Vendor", choices=[(t, t.title()) for t in NAS_TYPES], default="mikrotik")
    # A PasswordField never writes its value back into the page, not even when the form is shown again with errors.
    secret = PasswordField("RADIUS shared secret", validators=[DataRequired()],
                           description="8 to 64 printable characters without spaces; 16 or more is better. The same "
                                       "secret goes into the router's RADIUS settings.")
    coa_port = IntegerField("CoA port", default=DEFAULT_COA_PORT, validators=[InputRequired()],
                            description="Where the router listens for Disconnect and CoA requests (RFC 5176). "
                                        "MikroTik: /radius incoming set accept=yes port=3799.")
    description = StringField("Description", validators=[Optional()])
    submit = SubmitField("Save")

    def values(self) -> dict:
        """Return the router fields for the NAS service."""
        return {"nasname": self.nasname.data, "shortname": self.shortname.data, "type": self.type.data,
                "secret": self.secret.data, "coa_port": self.coa_port.data, "description": self.description.data}


class RouterEditForm(RouterForm):
    """A router being edited: its secret is never shown; a new one replaces it, an empty field keeps it."""

    secret = PasswordField("Change secret", validators=[Optional()],
                           description="A secret is set. Leave empty to keep it; type a new one (8 to 64 printable "
                                       "characters, no spaces) to replace it, and change it on the router too.")


class SettingsForm(FlaskForm):
    """The network action per suspension reason, the walled garden's attributes and the reject message."""

    non_payment = RadioField(REASONS["non_payment"][0], choices=ACTION_CHOICES, description=REASONS["non_payment"][1])
    manual = RadioField(REASONS["manual"][0], choices=ACTION_CHOICES, description=REASONS["manual"][1])
    vacation = RadioField(REASONS["vacation"][0], choices=ACTION_CHOICES, description=REASONS["vacation"][1])
    walled_garden_pool = StringField("Address pool (Framed-Pool)", validators=[Optional()],
                                     description="The router's IP pool for suspended customers; empty sends none.")
    walled_garden_rate = StringField("Rate limit (Mikrotik-Rate-Limit)", validators=[Optional()],
                                     description="Upload/download, e.g. 256k/256k; empty sends none.")
    walled_garden_address_list = StringField("Address list (Mikrotik-Address-List)", validators=[Optional()],
                                             description="The firewall list that redirects them to the pay page; "
                                                         "empty sends none.")
    reject_message = StringField("Message sent with a reject (Reply-Message)", validators=[Optional()],
                                 description="Some routers and PPPoE clients show it to the customer.")
    submit = SubmitField("Save policy")

    def policies(self) -> dict[str, str]:
        """The action chosen for each reason."""
        return {reason: getattr(self, reason).data for reason in REASONS}

    def fixed(self) -> dict[str, str]:
        """The fixed attributes' values as typed (empty removes one)."""
        return {name: getattr(self, name).data or "" for name in
                ("walled_garden_pool", "walled_garden_rate", "walled_garden_address_list", "reject_message")}


class GroupAttributeForm(FlaskForm):
    """Any other attribute of the walled-garden or rejected group."""

    groupname = SelectField("Group", choices=[(g, g) for g in GROUPS])
    kind = SelectField("Kind", choices=[(k, k) for k in ATTRIBUTE_KINDS], default="reply")
    attribute = StringField("Attribute", validators=[DataRequired()], description="e.g. Session-Timeout")
    op = SelectField("Operator", choices=[(o, o) for o in ATTRIBUTE_OPS], default=":=")
    value = StringField("Value", validators=[DataRequired()])
    add = SubmitField("Add attribute")


class GroupAttributeRemoveForm(FlaskForm):
    """Which group attribute to remove."""

    groupname = HiddenField(validators=[DataRequired()])
    kind = HiddenField(validators=[DataRequired()])
    attribute = HiddenField(validators=[DataRequired()])

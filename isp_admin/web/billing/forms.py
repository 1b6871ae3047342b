"""Billing operations forms: the run date, starting the run, the notification filter."""
from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DateField, SelectField
from wtforms.validators import InputRequired, Optional

from isp_admin.models.operations import NOTIFICATION_STATUSES


class RunDateForm(FlaskForm):
    """The date whose run to preview (GET, no CSRF)."""

    class Meta:
        csrf = False

    as_of = DateField("Run for", validators=[Optional()])


class StartRunForm(FlaskForm):
    """Start the nightly run for a date."""

    as_of = DateField("Run for", validators=[InputRequired(message="Pick the date to run for.")])


class NotificationFilterForm(FlaskForm):
    """Which outbox rows to list (GET, no CSRF); failed ones first, as they need someone."""

    class Meta:
        csrf = False

    status = SelectField("Status", choices=[(s, s.title()) for s in sorted(
        NOTIFICATION_STATUSES, key=lambda s: s != "failed")] + [("all", "All")], validators=[Optional()])

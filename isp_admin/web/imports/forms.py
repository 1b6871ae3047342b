"""Import forms: the upload (what the file holds, how it writes dates and amounts) and the apply button."""
from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField, SelectField, SubmitField

from isp_admin.services.imports.uploads import DATE_FORMAT_LABELS


class UploadForm(FlaskForm):
    """A CSV file and how to read it; the kinds offered are the ones the user's role may import."""

    kind = SelectField("The file holds", choices=[])
    file = FileField("CSV file", validators=[FileRequired("Choose a CSV file.")],
                     description="UTF-8 text, comma, semicolon or tab separated, a header naming the columns.")
    date_format = SelectField("Dates are written as", choices=list(DATE_FORMAT_LABELS.items()), default="iso")
    decimal_comma = BooleanField("Amounts use a decimal comma (1.234,56)")
    skip_debits = BooleanField("Skip debits and empty amounts (a bank statement lists money going out too)")
    submit = SubmitField("Upload and check")


class ApplyForm(FlaskForm):
    """Apply a checked import; a file applied before needs the box ticked."""

    confirm_repeat = BooleanField("Apply it again: the same file was applied before")
    submit = SubmitField("Apply")

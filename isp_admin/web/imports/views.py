"""CSV import pages: upload and check a file, preview what it would do, apply it in one transaction."""
from __future__ import annotations

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for

from isp_admin.edge import takes_upload
from isp_admin.services.imports import uploads
from isp_admin.web.access import access, can
from isp_admin.web.imports.forms import ApplyForm, UploadForm
from isp_admin.web.unit_of_work import REFUSED, perform

bp = Blueprint("imports", __name__, url_prefix="/imports")

# Customers (and their subscriptions) are what customer editors change; payments are money, for billing.
KIND_PERMISSIONS = {"customers": "customers.edit", "payments": "billing.edit"}
# What browsers send for a .csv file: Windows names Excel's type for it.
CSV_TYPES = ("text/csv", "application/csv", "application/vnd.ms-excel")


def _require(kind: str) -> None:
    if not can(KIND_PERMISSIONS[kind]):
        abort(403, "Your role does not allow this import.")


def _upload_form() -> UploadForm:
    form = UploadForm()
    form.kind.choices = [(kind, label) for kind, label in uploads.KIND_LABELS.items()
                         if can(KIND_PERMISSIONS[kind])]
    return form


def _render_index(form: UploadForm, status: int = 200):
    return render_template("imports/index.html", form=form, imports=uploads.recent_imports(),
                           labels=uploads.KIND_LABELS, size_limit=uploads.size_text(uploads.upload_limit())), status


@bp.get("/")
@access("customers.edit")
def index():
    """The upload form and the latest imports."""
    return _render_index(_upload_form())


def _file_content(form: UploadForm) -> bytes | None:
    """The uploaded bytes, or None with the reason on the form (not a .csv file, or larger than allowed)."""
    upload = form.file.data
    name = (upload.filename or "").lower()
    if not (name.endswith(".csv") or upload.mimetype in CSV_TYPES):
        form.file.errors.append("Choose a .csv file (saved from a spreadsheet as CSV).")
        return None
    limit = uploads.upload_limit()
    content = upload.stream.read(limit + 1)
    if len(content) > limit:
        form.file.errors.append(f"The file is larger than {uploads.size_text(limit)}; split it into smaller files.")
        return None
    return content


@bp.post("/")
@takes_upload("IMPORT_MAX_BYTES")
@access("customers.edit")
def upload():
    """Store the file and check every row; nothing else is written until it is applied."""
    kind = request.form.get("kind")
    if kind in KIND_PERMISSIONS:
        _require(kind)
    form = _upload_form()
    if form.validate_on_submit() and (content := _file_content(form)) is not None:
        imp = perform(uploads.upload, form.kind.data, form.file.data.filename, content,
                      date_format=form.date_format.data, decimal_comma=form.decimal_comma.data,
                      skip_debits=form.skip_debits.data, form=form)
        if imp is not REFUSED:
            if imp.error_count:
                flash(f"Checked {imp.row_count:,} row(s): {imp.error_count:,} error(s). Nothing was written; fix "
                      "the file and upload it again.", "danger")
            else:
                flash(f"Checked {imp.row_count:,} row(s): no errors. Nothing is written until you apply it.",
                      "success")
            return redirect(url_for("imports.detail", import_id=imp.id))
    return _render_index(form)


@bp.get("/<id:import_id>")
@access("customers.edit")
def detail(import_id: int):
    """The preview of an import (what it would create, or every error found) or what applying it did."""
    imp = uploads.get_import(import_id)
    _require(imp.kind)
    earlier = uploads.earlier_apply(imp) if imp.status == "previewed" else None
    return render_template("imports/detail.html", imp=imp, report=imp.report or {}, earlier=earlier,
                           form=ApplyForm(formdata=None), label=uploads.KIND_LABELS[imp.kind])


@bp.post("/<id:import_id>/apply")
@access("customers.edit")
def apply(import_id: int):
    """Apply the checked file: every row in one transaction, or nothing."""
    imp = uploads.get_import(import_id)
    _require(imp.kind)
    back = redirect(url_for("imports.detail", import_id=imp.id))
    form = ApplyForm()
    if not form.validate_on_submit():
        flash("The form expired; please try again.", "danger")
        return back
    outcome = perform(uploads.apply, imp.id, confirm_repeat=form.confirm_repeat.data, failure="Not applied: {}")
    if outcome is REFUSED:
        return back
    if outcome.applied:
        flash(f"Imported: {uploads.describe(outcome.counts)}.", "success")
    else:
        flash(f"Nothing was applied: {outcome.error_count:,} error(s) now (the data changed since the check). "
              "Fix the file and upload it again.", "danger")
    return back


@bp.get("/templates/<kind>.csv")
@access("customers.edit")
def template(kind: str):
    """A CSV file with the columns of one kind of import and example rows."""
    if kind not in KIND_PERMISSIONS:
        abort(404)
    _require(kind)
    return Response(uploads.template_csv(kind), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{kind}-import-template.csv"'})

"""An import's life: upload (stored, then checked in a rolled-back savepoint), the preview it shows, and apply.

Apply reads the stored bytes again, locks the import, and runs every row through the services once more (the data
may have changed since the preview): all rows are kept, or, at the first sight of an error anywhere, none. A file
whose bytes were applied before is refused unless the second apply is confirmed (and names the first); a partial
unique index makes two first applies of one file at the same moment end in one apply and one 409.
"""
from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from isp_admin.errors import Conflict, Invalid, NotFound
from isp_admin.extensions import db
from isp_admin.models import CsvImport
from isp_admin.models.base import utcnow
from isp_admin.services.billing.money import format_cents
from isp_admin.services.imports import customers, payments
from isp_admin.services.imports.reading import Table, read_table, refuse
from isp_admin.services.imports.report import Report
from isp_admin.services.imports.values import DATE_FORMATS
from isp_admin.services.platform import audit
from isp_admin.services.platform.clock import today

KINDS = {"customers": customers, "payments": payments}
KIND_LABELS = {"customers": "Customers with subscriptions", "payments": "Payments from a bank statement"}
DATE_FORMAT_LABELS = {key: f"{pattern} ({example})" for (key, pattern), example in
                      zip(DATE_FORMATS.items(), ("2026-07-31", "31/07/2026", "07/31/2026"), strict=True)}
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f]")


class _Undo(Exception):
    """Not an error: the way out of a savepoint that must be rolled back."""


@dataclass(frozen=True)
class Outcome:
    """What an apply did: applied (every row kept) or refused for errors (nothing kept), with the figures."""

    applied: bool
    counts: dict
    error_count: int


def _limit(name: str) -> int:
    return int(current_app.config[name])


def upload_limit() -> int:
    """The largest file the import page takes, in bytes (IMPORT_MAX_BYTES)."""
    return _limit("IMPORT_MAX_BYTES")


def size_text(size: int) -> str:
    """A byte count as people say it: 5 MB, 1.5 MB, 98 kB."""
    if size >= 1024 * 1024:
        return f"{size / 1024 / 1024:.1f}".removesuffix(".0") + " MB"
    return f"{max(1, size // 1024):,} kB"


def describe(counts: dict) -> str:
    """A check's or an apply's figures in words: '2 customer(s), 2 subscription(s), 1 suspended'."""
    parts = []
    for key, word in (("customers", "customer(s)"), ("subscriptions", "subscription(s)"), ("payments", "payment(s)")):
        if counts.get(key):
            parts.append(f"{counts[key]:,} {word}")
    if counts.get("suspended"):
        parts.append(f"{counts['suspended']:,} suspended")
    if counts.get("amount_cents"):
        parts.append(f"{format_cents(counts['amount_cents'], current_app.config['CURRENCY'])} in total")
    return ", ".join(parts) or "nothing"


def clean_filename(filename: str | None) -> str:
    """The uploaded file's own name, without any path or control character, at most 255 characters."""
    name = re.split(r"[\\/]", filename or "")[-1]
    name = _UNSAFE_NAME.sub("", name).strip()
    return (name or "upload.csv")[:255]


def _read(kind: str, content: bytes) -> Table:
    return read_table(content, KINDS[kind].COLUMNS, _limit("IMPORT_MAX_ROWS"))


def upload(kind: str, filename: str | None, content: bytes, *, date_format: str = "iso", decimal_comma: bool = False,
           skip_debits: bool = False) -> CsvImport:
    """Store an uploaded CSV file and check every row (nothing else is written); return the import to preview."""
    if kind not in KINDS:
        raise Invalid("Choose what the file holds.", {"kind": "Customers or payments."})
    if date_format not in DATE_FORMATS:
        raise Invalid("Choose how the file writes dates.", {"date_format": "One of the listed formats."})
    limit = upload_limit()
    if len(content) > limit:
        raise refuse(f"The file is larger than {size_text(limit)}; split it into smaller files.")
    table = _read(kind, content)  # a file that cannot be read is refused here, before anything is stored
    imp = CsvImport(kind=kind, filename=clean_filename(filename), content=content,
                    sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content), date_format=date_format,
                    decimal_comma=decimal_comma, skip_debits=skip_debits and kind == "payments", status="previewed",
                    report={}, created_by=audit.current_actor().label)
    db.session.add(imp)
    db.session.flush()
    _store(imp, _check(imp, table, keep=False))
    return imp


def _check(imp: CsvImport, table: Table, *, keep: bool) -> Report:
    """Run every row through the services in a savepoint; keep what they wrote only when asked and nothing failed."""
    report = Report(rows=len(table.rows) + len(table.row_errors), ignored_columns=table.ignored,
                    delimiter=table.delimiter)
    for number, message in table.row_errors:
        report.error(number, None, message)
    options = {"date_format": imp.date_format, "decimal_comma": imp.decimal_comma, "skip_debits": imp.skip_debits}
    kind = imp.kind
    try:
        with db.session.begin_nested():  # left by raising, it is rolled back
            KINDS[kind].run(table, options, today(), report)
            if not (keep and report.ok):
                raise _Undo  # a preview, or a refused apply: every row's writes (and their audit events) go
    except _Undo:
        pass
    return report


def _store(imp: CsvImport, report: Report) -> None:
    imp.report = report.as_json()
    imp.row_count, imp.error_count, imp.checked_at = report.rows, report.error_count, utcnow()
    db.session.flush()


def get_import(import_id: int) -> CsvImport:
    """Return an import (without its bytes) or raise NotFound."""
    imp = db.session.get(CsvImport, import_id)
    if imp is None:
        raise NotFound("No such import.")
    return imp


def earlier_apply(imp: CsvImport) -> CsvImport | None:
    """The first import that applied the same bytes (as the same kind), if any."""
    return db.session.scalar(select(CsvImport).where(
        CsvImport.kind == imp.kind, CsvImport.sha256 == imp.sha256, CsvImport.status == "applied",
        CsvImport.id != imp.id).order_by(CsvImport.id).limit(1))


def recent_imports(limit: int = 20) -> list:
    """The newest imports, as rows of the columns a list shows (never the file's bytes or the report)."""
    t = CsvImport.__table__.c
    return list(db.session.execute(
        select(t.id, t.kind, t.filename, t.status, t.row_count, t.error_count, t.created_by, t.created_at,
               t.applied_at, t.applied_by).order_by(t.id.desc()).limit(limit)))


def apply(import_id: int, confirm_repeat: bool = False) -> Outcome:
    """Apply a previewed import: all its rows in this transaction, or none when any row fails now."""
    imp = db.session.scalar(select(CsvImport).where(CsvImport.id == import_id).with_for_update()
                            .execution_options(populate_existing=True))
    if imp is None:
        raise NotFound("No such import.")
    if imp.status == "applied":
        raise Conflict(f"Import #{imp.id} is already applied ({imp.applied_at:%Y-%m-%d %H:%M} UTC, "
                       f"{imp.applied_by}).")
    earlier = earlier_apply(imp)
    if earlier is not None and not confirm_repeat:
        raise Conflict(f"This file was applied before, as import #{earlier.id} on {earlier.applied_at:%Y-%m-%d} by "
                       f"{earlier.applied_by}. Tick “Apply it again” to import its rows a second time.",
                       {"confirm_repeat": "The same file was applied before."})
    table = _read(imp.kind, imp.content)  # the very bytes the preview checked
    try:
        with db.session.begin_nested():
            imp.status, imp.applied_at, imp.applied_by = "applied", utcnow(), audit.current_actor().label
            imp.repeat_of = earlier.id if earlier is not None else None
            try:
                db.session.flush()
            except IntegrityError:  # uq_imports_applied_sha256: another apply of these bytes committed first
                raise Conflict("The same file was applied a moment ago; reload the page.") from None
            report = _check(imp, table, keep=True)
            if not report.ok:
                raise _Undo  # the import is previewed again, with what this check found
    except _Undo:
        _store(imp, report)
        return Outcome(applied=False, counts=report.counts, error_count=report.error_count)
    _store(imp, report)
    audit.record("import.apply", imp, after={"kind": imp.kind, "filename": imp.filename, "sha256": imp.sha256,
                                              "rows": report.rows, **report.counts, "repeat_of": imp.repeat_of})
    return Outcome(applied=True, counts=report.counts, error_count=0)


def template_csv(kind: str) -> str:
    """A CSV file with every column of `kind` and an example row or two, to start from."""
    if kind not in KINDS:
        raise NotFound("No such kind of import.")
    module = KINDS[kind]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=module.COLUMNS.names, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(module.EXAMPLE)
    return out.getvalue()

"""What checking an import found: counts, per-row errors (row, column, message) and notices, kept as JSON."""
from __future__ import annotations

from dataclasses import dataclass, field

from isp_admin.errors import AppError

# Enough to fix a file by; a file with more errors than this has a systematic problem the first ones show.
MAX_LISTED = 1000
REFUSED_BY_DATABASE = "The database refused this row: a value is out of range or already taken by another record."


@dataclass
class Report:
    """The outcome of one check of a file; `ok` when no row has an error."""

    rows: int = 0
    counts: dict = field(default_factory=dict)
    errors: list[dict] = field(default_factory=list)
    notices: list[dict] = field(default_factory=list)
    error_count: int = 0
    notice_count: int = 0
    error_rows: set = field(default_factory=set)
    ignored_columns: list[str] = field(default_factory=list)
    delimiter: str = ","

    @property
    def ok(self) -> bool:
        """Whether every row passed."""
        return self.error_count == 0

    def error(self, row: int, column: str | None, message: str) -> None:
        """Record that `row` (its spreadsheet number) cannot be imported, and why."""
        self.error_count += 1
        self.error_rows.add(row)
        if len(self.errors) < MAX_LISTED:
            self.errors.append({"row": row, "column": column, "message": message})

    def notice(self, row: int, column: str | None, message: str) -> None:
        """Record something staff should know about a row that is imported (or skipped) anyway."""
        self.notice_count += 1
        if len(self.notices) < MAX_LISTED:
            self.notices.append({"row": row, "column": column, "message": message})

    def refused(self, row: int, exc: AppError, columns: dict[str, str]) -> None:
        """Record a service's refusal of a row: one error per field it names (as CSV columns), else its message."""
        named = [(columns.get(name, name), message) for name, message in (exc.details or {}).items()]
        if not named:
            self.error(row, None, exc.message)
        for column, message in named:
            self.error(row, column, f"{exc.message} {message}" if message and message != exc.message else exc.message)

    def mark(self) -> tuple:
        """Where the report stands now, to go back to when the rows after it are run again."""
        return (len(self.errors), self.error_count, set(self.error_rows), len(self.notices), self.notice_count,
                dict(self.counts))

    def reset(self, mark: tuple) -> None:
        """Forget everything recorded since `mark`."""
        errors, self.error_count, self.error_rows, notices, self.notice_count, self.counts = mark
        del self.errors[errors:], self.notices[notices:]

    def count(self, name: str, by: int = 1) -> None:
        """Add to one of the summary's figures."""
        self.counts[name] = self.counts.get(name, 0) + by

    def as_json(self) -> dict:
        """The report as stored on the import (and shown on its page)."""
        self.errors.sort(key=lambda e: (e["row"], e["column"] or ""))
        self.notices.sort(key=lambda e: (e["row"], e["column"] or ""))
        return {"rows": self.rows, "counts": self.counts, "errors": self.errors, "notices": self.notices,
                "error_count": self.error_count, "error_rows": len(self.error_rows),
                "notice_count": self.notice_count, "ignored_columns": self.ignored_columns,
                "delimiter": {",": "comma", ";": "semicolon", "\t": "tab"}[self.delimiter]}

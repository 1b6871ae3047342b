"""Reading an uploaded CSV file: bytes to named columns and numbered rows, or one clear reason why not.

What a spreadsheet or a peer system writes varies; what we take is narrow: UTF-8 text (with or without a byte order
mark), comma, semicolon or tab separated (found from the header line), a header naming the columns. Binary files,
UTF-16, other encodings, broken quoting, absurd widths and lengths are refused with a message saying what to do.
"""
from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass, field

from isp_admin.errors import Invalid

MAX_COLUMNS = 200
# The csv module refuses a longer cell itself ("field larger than field limit"); its default is 131,072 characters.
MAX_CELL = csv.field_size_limit()
DELIMITERS = (",", ";", "\t")
SAVE_AS = "Save it from the spreadsheet as “CSV UTF-8 (comma delimited)” and upload that."
SIGNATURES = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook is one)"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\xd0\xcf\x11\xe0", "an Excel 97–2003 workbook (.xls)"),
)
_HEADER_WORD = re.compile(r"[\s\-./]+")


@dataclass(frozen=True)
class Columns:
    """The columns a kind of import accepts: canonical names, their accepted spellings, the required ones."""

    names: tuple[str, ...]
    required: tuple[str, ...]
    aliases: dict[str, str] = field(default_factory=dict)

    def canonical(self, header: str) -> str | None:
        """Return the column a header cell names (case, spaces and hyphens aside), or None when it names none."""
        key = _HEADER_WORD.sub("_", header.strip().lower()).strip("_")
        return key if key in self.names else self.aliases.get(key)


@dataclass
class Table:
    """A read file: each position's column (None: ignored), the data rows with their spreadsheet row numbers."""

    columns: list[str | None]
    rows: list[tuple[int, dict[str, str]]]
    ignored: list[str]
    delimiter: str
    row_errors: list[tuple[int, str]] = field(default_factory=list)


def refuse(message: str) -> Invalid:
    """The error for a file that cannot be read at all (shown on the upload form's file field)."""
    return Invalid(message, {"file": message})


def decode(content: bytes) -> str:
    """Return the file as text, or raise why it is not UTF-8 CSV text."""
    if not content.strip():
        raise refuse("The file is empty.")
    for magic, what in SIGNATURES:
        if content.startswith(magic):
            raise refuse(f"This is {what}, not a CSV file. {SAVE_AS}")
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _looks_utf16(content[:2000]):
        raise refuse(f"The file is UTF-16 text (Excel's “Unicode text”), not UTF-8. {SAVE_AS}")
    if b"\x00" in content:
        line = content.count(b"\n", 0, content.index(b"\x00")) + 1
        raise refuse(f"The file holds NUL bytes (first on line {line}): it is binary data, not CSV text.")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        raise refuse(f"The file is not UTF-8 text: line {line} has the byte 0x{content[exc.start]:02X}, as Latin-1 "
                     f"or Windows-1252 files write accented letters. {SAVE_AS}") from None
    if not text.strip():
        raise refuse("The file is empty.")
    return text


def _looks_utf16(sample: bytes) -> bool:
    # Mostly-ASCII UTF-16 without a byte order mark has a NUL in every other byte.
    half = len(sample) // 2
    return half >= 4 and max(sample[0::2].count(0), sample[1::2].count(0)) >= half * 0.4


def sniff_delimiter(header_line: str) -> str:
    """Return the delimiter the header line uses most (outside quotes): comma, semicolon or tab."""
    counts = dict.fromkeys(DELIMITERS, 0)
    quoted = False
    for char in header_line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])  # ties go to the first: the comma
    return best if counts[best] else ","


def _short(text: str, limit: int = 40) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _header(cells: list[str], spec: Columns) -> tuple[list[str | None], list[str]]:
    if len(cells) > MAX_COLUMNS:
        raise refuse(f"The first line has {len(cells):,} columns; at most {MAX_COLUMNS} are read. "
                     "It must be the header naming the columns.")
    columns: list[str | None] = []
    ignored: list[str] = []
    seen: dict[str, int] = {}
    for position, cell in enumerate(cells, 1):
        name = spec.canonical(cell)
        if name is None:
            if cell.strip():
                ignored.append(_short(cell))
            columns.append(None)
            continue
        if name in seen:
            raise refuse(f"Columns {seen[name]} and {position} of the header both give “{name}”; keep one.")
        seen[name] = position
        columns.append(name)
    missing = [name for name in spec.required if name not in seen]
    if missing:
        raise refuse(f"The header lacks the required column(s) {', '.join(missing)}. The first line must name the "
                     f"columns; these are read: {', '.join(spec.names)}.")
    return columns, ignored


def read_table(content: bytes, spec: Columns, max_rows: int) -> Table:
    """Read `content` as CSV with a header; raise Invalid (on the `file` field) when it cannot be read at all."""
    text = decode(content)
    delimiter = sniff_delimiter(text.split("\n", 1)[0])
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(cell.strip() for cell in header):
            raise refuse("The first line is empty: it must name the columns.")
        columns, ignored = _header(header, spec)
        table = Table(columns=columns, rows=[], ignored=ignored, delimiter=delimiter)
        number = 1
        for cells in reader:
            number += 1  # a spreadsheet's row number: the header is row 1, blank lines count
            if not any(cell.strip() for cell in cells):
                continue
            if len(table.rows) + len(table.row_errors) >= max_rows:
                raise refuse(f"The file has more than {max_rows:,} rows; split it into smaller files.")
            extra = cells[len(columns):]
            if any(cell.strip() for cell in extra):
                table.row_errors.append((number, f"This row has {len(cells):,} cells; the header names "
                                                 f"{len(columns)}."))
                continue
            table.rows.append((number, {name: cell.strip() for name, cell in zip(columns, cells, strict=False)
                                        if name is not None}))
    except csv.Error as exc:
        if "field larger than field limit" in str(exc):
            raise refuse(f"Line {reader.line_num}: a cell is longer than {MAX_CELL:,} characters.") from None
        raise refuse(f"Line {reader.line_num}: the quoting is broken ({exc}). {SAVE_AS}") from None
    return table

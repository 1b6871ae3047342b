"""Reading an uploaded file: what a spreadsheet writes is read, anything else is refused with a reason."""
from __future__ import annotations

import codecs

import pytest

from isp_admin.errors import Invalid
from isp_admin.services.imports.customers import COLUMNS
from isp_admin.services.imports.reading import MAX_CELL, read_table, sniff_delimiter

GOOD = "name,email\r\nAnn,ann@mail.example\r\n"


def refused(content: bytes, max_rows: int = 100) -> str:
    with pytest.raises(Invalid) as caught:
        read_table(content, COLUMNS, max_rows)
    assert caught.value.details == {"file": caught.value.message}
    return caught.value.message


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_the_delimiter_is_found_from_the_header(delimiter):
    content = f"name{delimiter}email{delimiter}notes\nAnn{delimiter}ann@mail.example{delimiter}\"a, b;\tc\"\n".encode()
    table = read_table(content, COLUMNS, 10)
    assert table.delimiter == delimiter
    assert table.rows == [(2, {"name": "Ann", "email": "ann@mail.example", "notes": "a, b;\tc"})]


def test_a_quoted_delimiter_in_the_header_does_not_count():
    assert sniff_delimiter('"name, first";email;phone') == ";"
    assert sniff_delimiter("name") == ","


def test_a_byte_order_mark_is_dropped_and_headers_are_matched_loosely():
    content = codecs.BOM_UTF8 + b"Full Name;E-Mail;Phone Number;Plan Code;Colour\nAnn;a@mail.example;1;X;red\n"
    table = read_table(content, COLUMNS, 10)
    assert table.columns == ["name", "email", "phone", "plan", None]
    assert table.ignored == ["Colour"]
    assert table.rows[0][1] == {"name": "Ann", "email": "a@mail.example", "phone": "1", "plan": "X"}


def test_blank_lines_are_skipped_and_rows_keep_the_spreadsheets_numbers():
    content = b'name,notes\n\nAnn,"two\nlines"\n,\nBob,\n'
    table = read_table(content, COLUMNS, 10)
    assert [(n, cells["name"]) for n, cells in table.rows] == [(3, "Ann"), (5, "Bob")]
    assert table.rows[0][1]["notes"] == "two\nlines"


@pytest.mark.parametrize("content", [b"", b"   \r\n\n", codecs.BOM_UTF8, codecs.BOM_UTF8 + b"\n\n"])
def test_an_empty_file_is_refused(content):
    assert "empty" in refused(content)


@pytest.mark.parametrize(("magic", "named"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG image"),
    (b"PK\x03\x04\x14\x00\x06\x00", "ZIP archive"),
    (b"%PDF-1.7\n", "PDF"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "Excel 97"),
])
def test_a_binary_file_renamed_csv_is_refused_by_what_it_is(magic, named):
    assert named in refused(magic + bytes(range(256)) * 4)


def test_utf16_with_or_without_a_byte_order_mark_is_refused():
    assert "UTF-16" in refused(GOOD.encode("utf-16"))  # with its BOM
    assert "UTF-16" in refused(GOOD.encode("utf-16-le"))


def test_latin1_is_refused_with_the_line_of_the_first_bad_byte():
    message = refused("name,email\nAnn,a@mail.example\nZoë,z@mail.example\n".encode("latin-1"))
    assert "not UTF-8" in message and "line 3" in message and "0xEB" in message


def test_a_nul_byte_is_refused():
    assert "NUL" in refused(b"name,email\nAnn\x00,a@mail.example\n")


def test_a_header_of_ten_thousand_columns_is_refused():
    assert "10,000 columns" in refused((",".join(f"c{i}" for i in range(10_000)) + "\nx\n").encode())


def test_a_data_row_of_ten_thousand_cells_is_an_error_of_that_row_only():
    content = ("name,email\n" + "Ann" + "," * 9_999 + "x\nBob,b@mail.example\n").encode()
    table = read_table(content, COLUMNS, 10)
    assert table.row_errors == [(2, "This row has 10,000 cells; the header names 2.")]
    assert [cells["name"] for _, cells in table.rows] == ["Bob"]


def test_trailing_empty_cells_are_tolerated():
    table = read_table(b"name,email\nAnn,a@mail.example,,,\n", COLUMNS, 10)
    assert table.row_errors == [] and table.rows[0][1]["name"] == "Ann"


def test_a_cell_longer_than_the_csv_limit_is_refused_cleanly():
    message = refused(b"name,notes\nAnn," + b"x" * (MAX_CELL + 10) + b"\n")
    assert "longer than 131,072 characters" in message


def test_broken_quoting_is_refused_with_its_line():
    assert "Line 3" in refused(b'name,email\nAnn,a@mail.example\n"Bob"x,b@mail.example\n')


@pytest.mark.parametrize("header", ["name,email,Email", "name,address,service_address", "name,phone,mobile"])
def test_a_column_given_twice_is_refused(header):
    assert "both give" in refused(f"{header}\nAnn,a,b\n".encode())


def test_a_missing_required_column_is_refused_and_the_accepted_ones_are_named():
    message = refused(b"email,phone\na@mail.example,1\n")
    assert "required column(s) name" in message and "pppoe_username" in message


def test_more_rows_than_allowed_are_refused():
    content = ("name\n" + "".join(f"Customer {i}\n" for i in range(4))).encode()
    assert len(read_table(content, COLUMNS, 4).rows) == 4
    assert "more than 3 rows" in refused(content, max_rows=3)


def test_formula_cells_are_read_as_plain_text():
    table = read_table(b"name,notes\n\"=cmd|' /C calc'!A0\",\"@SUM(1+1)\"\n", COLUMNS, 10)
    assert table.rows[0][1] == {"name": "=cmd|' /C calc'!A0", "notes": "@SUM(1+1)"}

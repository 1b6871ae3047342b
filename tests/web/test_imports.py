"""The import pages: upload (hostile files refused cleanly), preview with per-row errors, apply once, audited."""
from __future__ import annotations

import codecs
import io

import pytest
from sqlalchemy import func, select

from isp_admin.extensions import db
from isp_admin.models import AuditEvent, CsvImport, Customer, Subscription
from isp_admin.services.imports.customers import COLUMNS
from tests.factories import PlanFactory
from tests.services.imports.helpers import CUSTOMER_HEADER, csv_bytes, customer


@pytest.fixture
def billing_user(login):
    PlanFactory(code="HOME-50", name="Home 50")
    return login("billing")


def post_file(client, content: bytes, name: str = "export.csv", mimetype: str = "text/csv", **fields):
    data = {"kind": "customers", "date_format": "iso", **fields,
            "file": (io.BytesIO(content), name, mimetype)}
    return client.post("/imports/", data=data, content_type="multipart/form-data")


def stored() -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(CsvImport))


def test_a_file_with_errors_is_previewed_with_them_and_nothing_is_written(client, billing_user):
    content = csv_bytes(CUSTOMER_HEADER, [customer(1), customer(2, plan="<script>alert(1)</script>"),
                                          customer(3, start_date="1/2/2026")])
    response = post_file(client, content)
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "2 error(s) in 2 row(s)" in page and 'id="apply-form"' not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page
    assert '<td class="text-end">3</td><td>plan</td>' in page
    assert '<td class="text-end">4</td><td>start_date</td>' in page
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0


def test_a_clean_file_is_applied_by_the_button_and_audited_as_the_user(client, billing_user):
    response = post_file(client, csv_bytes(CUSTOMER_HEADER, [customer(1), customer(2)]))
    detail = response.headers["Location"]
    page = client.get(detail).get_data(as_text=True)
    assert "every row passes" in page and 'id="apply-form"' in page and "2 to create" in page
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 0

    response = client.post(f"{detail}/apply")
    assert response.status_code == 302
    page = client.get(detail).get_data(as_text=True)
    assert "Imported: 2 customer(s), 2 subscription(s)." in page and "Applied" in page
    assert db.session.scalar(select(func.count()).select_from(Subscription)) == 2
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "import.apply"))
    assert event.actor_id == billing_user.id and event.after["rows"] == 2
    assert client.post(f"{detail}/apply").status_code == 302  # a second press: refused, flashed
    assert "already applied" in client.get(detail).get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 2


def test_the_same_file_again_needs_the_repeat_ticked(client, billing_user):
    content = csv_bytes(["name"], [{"name": "Repeat Customer"}])
    first = post_file(client, content).headers["Location"]
    client.post(f"{first}/apply")
    second = post_file(client, content).headers["Location"]
    page = client.get(second).get_data(as_text=True)
    assert "This very file was applied before" in page and "confirm_repeat" in page
    client.post(f"{second}/apply")
    assert "Not applied: This file was applied before" in client.get(second).get_data(as_text=True)
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 1
    client.post(f"{second}/apply", data={"confirm_repeat": "y"})
    assert db.session.scalar(select(func.count()).select_from(Customer)) == 2


HOSTILE = [
    pytest.param(b"", "The file is empty.", id="empty"),
    pytest.param(codecs.BOM_UTF8 + b"\r\n", "The file is empty.", id="bom-only"),
    pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, "This is a PNG image, not a CSV file", id="png"),
    pytest.param(b"PK\x03\x04" + bytes(range(256)) * 8, "This is a ZIP archive", id="zip"),
    pytest.param("name,email\nAnn,a@mail.example\n".encode("utf-16"), "UTF-16", id="utf16"),
    pytest.param("name\nJosé\n".encode("latin-1"), "is not UTF-8 text: line 2", id="latin1"),
    pytest.param(b"name\nAnn\x00\n", "NUL bytes", id="nul"),
    pytest.param((",".join(f"c{i}" for i in range(10_000)) + "\nx\n").encode(), "10,000 columns", id="wide"),
    pytest.param(b"name,notes\nAnn," + b"x" * 200_000 + b"\n", "longer than 131,072 characters", id="long-field"),
    pytest.param(b"name,Name\nAnn,Bob\n", "both give", id="duplicate-header"),
    pytest.param(b"email,phone\na@mail.example,1\n", "lacks the required column(s) name", id="missing-column"),
    pytest.param(b'name\n"Ann\n', "quoting is broken", id="open-quote"),
]


@pytest.mark.parametrize(("content", "message"), HOSTILE)
def test_a_hostile_file_is_refused_on_the_form_and_nothing_is_stored(client, billing_user, content, message):
    response = post_file(client, content)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert stored() == 0


def test_only_csv_files_are_taken(client, billing_user):
    response = post_file(client, b"name\nAnn\n", name="notes.txt", mimetype="text/plain")
    assert "Choose a .csv file" in response.get_data(as_text=True) and stored() == 0
    # Windows browsers send Excel's type for .csv files, and some send none: the name decides.
    assert post_file(client, b"name\nAnn\n", name="x.csv", mimetype="application/vnd.ms-excel").status_code == 302
    assert post_file(client, b"name\nAnn\n", name="X.CSV", mimetype="application/octet-stream").status_code == 302


def test_a_missing_file_or_bad_choice_is_a_form_error(client, billing_user):
    response = client.post("/imports/", data={"kind": "customers"})
    assert response.status_code == 200 and "Choose a CSV file." in response.get_data(as_text=True)
    for fields in ({"kind": "invoices"}, {"date_format": "yyyy"}):
        response = post_file(client, b"name\nAnn\n", **fields)
        assert response.status_code == 200 and "Not a valid choice" in response.get_data(as_text=True)
    assert client.post("/imports/", data={"kind": "customers\x00"}).status_code == 400
    assert stored() == 0


def test_the_size_limit_is_a_form_error_then_413_and_the_import_page_alone_passes_the_body_limit(
        app, client, billing_user):
    app.config.update(MAX_CONTENT_LENGTH=50_000, IMPORT_MAX_BYTES=300_000)
    rows = [customer(i, plan="", pppoe_username="", start_date="", notes="n" * 150) for i in range(1200)]
    big = csv_bytes(["name", "email", "notes"], [{k: r[k] for k in ("name", "email", "notes")} for r in rows])
    assert 200_000 < len(big) < 300_000
    response = post_file(client, big)  # four times MAX_CONTENT_LENGTH, within IMPORT_MAX_BYTES
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    assert client.post("/customers/new", data={"name": "x" * 60_000}).status_code == 413  # elsewhere: unchanged

    app.config["IMPORT_MAX_BYTES"] = 100_000
    response = post_file(client, big[:150_000])  # over the file limit, within the form's overhead
    assert response.status_code == 200 and "The file is larger than 97 kB" in response.get_data(as_text=True)
    response = post_file(client, big)  # beyond the limit and the overhead: refused before it is read
    assert response.status_code == 413
    assert stored() == 1


def test_the_template_is_every_column_and_is_read_back(client, billing_user):
    response = client.get("/imports/templates/customers.csv")
    assert response.mimetype == "text/csv"
    assert response.get_data(as_text=True).splitlines()[0] == ",".join(COLUMNS.names)
    assert post_file(client, response.data).status_code == 302  # the template's header is the reader's own
    assert client.get("/imports/templates/invoices.csv").status_code == 404
    assert client.get("/imports/999999999").status_code == 404


def test_support_is_offered_customers_only(client, login):
    login("support")
    page = client.get("/imports/").get_data(as_text=True)
    assert 'value="customers"' in page and 'value="payments"' not in page
    assert client.post("/imports/", data={"kind": "payments"}).status_code == 403


def _import_with_errors(client, rows: int) -> str:
    return post_file(client, csv_bytes(CUSTOMER_HEADER, [customer(i, plan="NOPE") for i in range(rows)])
                     ).headers["Location"]


def test_the_preview_page_costs_the_same_queries_for_3_rows_or_300(client, billing_user, query_counter):
    small, large = _import_with_errors(client, 3), _import_with_errors(client, 300)
    client.get(small)
    with query_counter() as few:
        assert client.get(small).status_code == 200
    with query_counter() as many:
        assert "300 error(s)" in client.get(large).get_data(as_text=True)
    assert len(many) == len(few) <= 6


def test_the_upload_page_costs_the_same_queries_for_1_import_or_25(client, billing_user, query_counter):
    post_file(client, b"name\nAnn\n")
    client.get("/imports/")
    with query_counter() as few:
        client.get("/imports/")
    for i in range(24):
        post_file(client, f"name\nCustomer {i}\n".encode())
    with query_counter() as many:
        page = client.get("/imports/").get_data(as_text=True)
    assert page.count('href="/imports/') >= 20
    assert len(many) == len(few) <= 5


def test_a_ten_megabyte_upload_is_413_before_it_is_read(client, billing_user):
    # The body built here, in memory: werkzeug's test client would spool one this large to a file it never closes.
    content = b"name\n" + b"A very long name indeed\n" * 450_000  # 10 MB
    boundary = "import-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\ncustomers\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n"
            "Content-Type: text/csv\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    response = client.post("/imports/", data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 413
    assert "larger than" in response.get_data(as_text=True)
    assert stored() == 0

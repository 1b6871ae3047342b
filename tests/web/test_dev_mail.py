"""The development mail viewer: /dev/mail/ lists what `make run` wrote to instance/outbox/ (newest first) and shows
one email as escaped text; names cannot leave the outbox; outside development, or with MAIL_URL set, it is a 404."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from isp_admin.services.messaging.mail import send_email
from tests.factories import PASSWORD, UserFactory

LINK = re.compile(r'href="/dev/mail/([^"/?]+)"')


def outbox(app) -> Path:
    """Return the app's outbox folder."""
    return Path(app.config["MAIL_OUTBOX_DIR"])


def write_mail(app, to: str, subject: str, text: str = "Hello", attachments=(), age_seconds: int = 0) -> str:
    """Send one email through the app's own mailer (to the outbox) and return its file name."""
    with app.test_request_context():
        before = set(outbox(app).glob("*.eml")) if outbox(app).exists() else set()
        send_email(to, subject, text, attachments)
    [path] = set(outbox(app).glob("*.eml")) - before
    if age_seconds:
        stamp = time.time() - age_seconds
        os.utime(path, (stamp, stamp))
    return path.name


def test_the_viewer_lists_the_outbox_newest_first_and_shows_one_email(app, client, login):
    login("admin")
    old = write_mail(app, "old@isp.example", "Your invoice INV-2026-000001", age_seconds=3600)
    new = write_mail(app, "new@isp.example", "You have been invited to ISP Admin",
                     "Choose your password: http://localhost:5000/reset-password/abc")

    page = client.get("/dev/mail/").get_data(as_text=True)

    assert LINK.findall(page) == [new, old]
    assert "new@isp.example" in page and "You have been invited to ISP Admin" in page
    assert '<p class="small text-body-secondary" id="outbox-count">2 emails in the outbox</p>' in page
    shown = client.get(f"/dev/mail/{new}")
    assert shown.status_code == 200
    text = shown.get_data(as_text=True)
    assert "Choose your password: http://localhost:5000/reset-password/abc" in text
    assert "new@isp.example" in text


def test_an_email_is_shown_escaped_never_rendered(app, client, login):
    login("admin")
    name = write_mail(app, "x@isp.example", "<script>alert('subject')</script>",
                      "<img src=x onerror=alert(1)><b>bold</b>")

    for url in ("/dev/mail/", f"/dev/mail/{name}"):
        page = client.get(url).get_data(as_text=True)
        assert "<script>alert(" not in page and "<img src=x" not in page and "<b>bold" not in page, url
    page = client.get(f"/dev/mail/{name}").get_data(as_text=True)
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;bold&lt;/b&gt;" in page
    assert "&lt;script&gt;alert(&#39;subject&#39;)&lt;/script&gt;" in page


def test_attachments_are_listed_by_name_type_and_size(app, client, login):
    login("admin")
    name = write_mail(app, "x@isp.example", "Invoice", "See attached.",
                      [("INV-2026-000001.pdf", "application/pdf", b"%PDF-1.7 " + b"x" * 2991)])

    page = client.get(f"/dev/mail/{name}").get_data(as_text=True)

    assert re.search(r"INV-2026-000001\.pdf\s*<span[^>]*>application/pdf, 3\.0 kB</span>", page), page
    assert "See attached." in page


def test_an_empty_or_missing_outbox_is_an_empty_page(app, client, login):
    login("admin")
    assert not outbox(app).exists()

    response = client.get("/dev/mail/")

    assert response.status_code == 200
    assert "The outbox is empty" in response.get_data(as_text=True)


def test_the_outbox_pages_after_fifty(app, client, login):
    login("admin")
    outbox(app).mkdir(parents=True)
    for n in range(51):
        path = outbox(app) / f"{n:032x}.eml"
        path.write_bytes(f"To: n{n}@isp.example\r\nSubject: Number {n}\r\n\r\nbody\r\n".encode())
        os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))

    first = client.get("/dev/mail/").get_data(as_text=True)
    second = client.get("/dev/mail/?page=2").get_data(as_text=True)

    assert len(LINK.findall(first)) == 50 and "Number 50" in first and "Page 1 of 2" in first
    assert LINK.findall(second) == [f"{0:032x}.eml"]
    for page in ("0", "-3", "99", str(2**70), "abc"):
        assert client.get(f"/dev/mail/?page={page}").status_code == 200, page
    assert client.get("/dev/mail/?page=%00").status_code == 400  # a NUL byte is refused at the edge


def test_files_that_are_not_outbox_emails_are_neither_listed_nor_shown(app, client, login):
    login("admin")
    kept = write_mail(app, "x@isp.example", "Kept")
    secret = outbox(app).parent / "secret_key"  # the instance folder's own file, one step outside the outbox
    secret.write_text("do-not-show-me")
    (outbox(app) / "notes.txt").write_text("not mail")
    (outbox(app) / ".hidden.eml").write_text("Subject: hidden\r\n\r\nx")
    os.symlink(secret, outbox(app) / f"{'f' * 32}.eml")
    (outbox(app) / "sub.eml").mkdir()

    listing = client.get("/dev/mail/").get_data(as_text=True)

    assert LINK.findall(listing) == [kept]
    hostile = ["notes.txt", ".hidden.eml", f"{'f' * 32}.eml", "sub.eml", "..%2Fsecret_key", "%2e%2e%2fsecret_key",
               "..", "...eml", "secret_key", "a.eml%00", "%00", "a" * 300 + ".eml", "x" * 10_000,
               f"{kept}%2F..%2F..%2Fsecret_key", "%5C..%5Csecret_key", "a.eml;", "A.EML"]
    for name in hostile:
        response = client.get(f"/dev/mail/{name}")
        # A NUL byte is refused at the edge (400) before routing; every other name is simply not there.
        assert response.status_code == (400 if "%00" in name else 404), (name, response.status_code)
        assert "do-not-show-me" not in response.get_data(as_text=True)
    assert client.get("/dev/mail/..%2F..%2Fsecret_key").status_code == 404
    assert client.get("/dev/mail/../secret_key").status_code == 404


def test_a_malformed_email_file_still_lists_and_shows(app, client, login):
    login("admin")
    outbox(app).mkdir(parents=True)
    (outbox(app) / f"{'b' * 32}.eml").write_bytes(b"\xff\xfe\x00garbage\r\nDate: not a date\r\nSubject: =?bad?=\r\n"
                                                  b"Content-Type: text/plain; charset=no-such-charset\r\n\r\n\x80\x81")

    assert client.get("/dev/mail/").status_code == 200
    assert client.get(f"/dev/mail/{'b' * 32}.eml").status_code == 200


def test_only_admins_read_the_outbox(app, client, login):
    name = write_mail(app, "x@isp.example", "Reset your ISP Admin password")
    for role in ("billing", "support", "readonly"):
        other = app.test_client()
        login(role, client_=other)
        assert other.get("/dev/mail/").status_code == 403, role
        assert other.get(f"/dev/mail/{name}").status_code == 403, role
        assert 'href="/dev/mail/"' not in other.get("/").get_data(as_text=True), role
    anonymous = app.test_client().get("/dev/mail/")
    assert anonymous.status_code == 302 and anonymous.headers["Location"].startswith("/login")


@pytest.mark.parametrize("overrides", [
    {"MAIL_URL": "smtp://127.0.0.1:1"},
    {"PRODUCTION": True, "PUBLIC_URL": "https://isp.example.com"},
], ids=["smtp", "production"])
def test_outside_development_every_dev_url_is_a_404_for_everyone(app, make_app, overrides):
    other = make_app(**overrides)
    with other.app_context():
        admin = UserFactory(role="admin")
        for url in ("/dev/mail/", f"/dev/mail/{'a' * 32}.eml"):
            assert other.test_client().get(url, base_url="https://localhost").status_code == 404, url
        client = other.test_client()
        signed_in = client.post("/login", data={"email": admin.email, "password": PASSWORD},
                                base_url="https://localhost")
        assert signed_in.status_code == 302
        dashboard = client.get("/", base_url="https://localhost")
        assert dashboard.status_code == 200
        assert 'href="/dev/mail/"' not in dashboard.get_data(as_text=True)
        assert client.get("/dev/mail/", base_url="https://localhost").status_code == 404


def test_in_development_the_navbar_links_the_viewer_for_admins(app, client, login):
    login("admin")

    assert 'href="/dev/mail/"' in client.get("/").get_data(as_text=True)

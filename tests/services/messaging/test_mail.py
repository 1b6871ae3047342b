"""Outgoing email: message building, delivery through a real SMTP server, and failure when SMTP is down."""
from __future__ import annotations

import pytest

from isp_admin.services.messaging.mail import build_message, send_email
from tests.factories import UserFactory
from tests.support.auth import RESET_SENT, flashes
from tests.support.network import free_port
from tests.support.smtp import outbox_messages, running_smtp_server

FROM = "Acme Fibre Billing <billing@acme-fibre.example>"
# Every byte value, so any 7-bit or text mangling on the way shows up.
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


def text_of(message) -> str:
    """Return the plain-text body with the wire's CRLF line ends turned back into LF."""
    return message.get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) collecting what the app sends."""
    with running_smtp_server() as inbox:
        yield inbox


@pytest.fixture
def mail_app(make_app, smtp_server):
    """An app that sends through the test SMTP server, with its app context pushed."""
    app = make_app(MAIL_URL=smtp_server.url, MAIL_FROM=FROM)
    with app.app_context():
        yield app


def test_build_message_sets_the_headers_and_attaches_files(mail_app):
    message = build_message("ann@customer.example", "Invoice INV-2026-000123", "Your invoice is attached.",
                            attachments=[("INV-2026-000123.pdf", "application/pdf", PDF)])

    assert message["From"] == FROM
    assert message["To"] == "ann@customer.example"
    assert message["Subject"] == "Invoice INV-2026-000123"
    assert message["Message-ID"].endswith("@isp-admin.local>")
    assert message["Date"]
    assert message.get_body(preferencelist=("plain",)).get_content() == "Your invoice is attached.\n"
    [attachment] = message.iter_attachments()
    assert attachment.get_filename() == "INV-2026-000123.pdf"
    assert attachment.get_content() == PDF


def test_a_pdf_arrives_intact_through_smtp(mail_app, smtp_server):
    message_id = send_email("ann@customer.example", "Invoice INV-2026-000123", "Your invoice is attached.",
                            attachments=[("INV-2026-000123.pdf", "application/pdf", PDF)])

    [envelope] = smtp_server.envelopes
    assert envelope.mail_from == "billing@acme-fibre.example"
    assert envelope.rcpt_tos == ["ann@customer.example"]
    [received] = smtp_server.messages
    assert received["Message-ID"] == message_id
    assert (received["From"], received["To"], received["Subject"]) == (
        FROM, "ann@customer.example", "Invoice INV-2026-000123")
    assert text_of(received) == "Your invoice is attached.\n"
    [attachment] = received.iter_attachments()
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_filename() == "INV-2026-000123.pdf"
    assert attachment.get_content() == PDF


def test_non_ascii_text_survives_the_trip(mail_app, smtp_server):
    send_email("zoe@customer.example", "Factura — €12,50", "Olá Zoë, obrigado! 😀")

    [received] = smtp_server.messages
    assert received["Subject"] == "Factura — €12,50"
    assert text_of(received) == "Olá Zoë, obrigado! 😀\n"


def test_an_unreachable_smtp_server_raises_oserror(make_app):
    app = make_app(MAIL_URL=f"smtp://127.0.0.1:{free_port()}")
    with app.app_context(), pytest.raises(OSError):
        send_email("ann@customer.example", "Hello", "Nobody is listening.")


def test_an_unsupported_mail_url_is_a_configuration_error(make_app):
    app = make_app(MAIL_URL="http://127.0.0.1:25")
    with app.app_context(), pytest.raises(ValueError, match="MAIL_URL"):
        send_email("ann@customer.example", "Hello", "Wrong scheme.")


def test_without_mail_url_messages_go_to_the_outbox(make_app):
    app = make_app(MAIL_URL=None)
    with app.app_context():
        message_id = send_email("ann@customer.example", "Hello", "Kept on disk.",
                                attachments=[("a.pdf", "application/pdf", PDF)])

    [message] = outbox_messages(app)
    assert message["Message-ID"] == message_id
    assert [a.get_content() for a in message.iter_attachments()] == [PDF]


def test_a_reset_request_still_answers_when_smtp_is_down(app, make_app, caplog):
    down = make_app(MAIL_URL=f"smtp://127.0.0.1:{free_port()}")
    with down.app_context():
        user = UserFactory()

        response = down.test_client().post("/forgot-password", data={"email": user.email}, follow_redirects=True)

    assert response.status_code == 200
    assert response.request.path == "/login"
    assert flashes(response) == [RESET_SENT]
    assert outbox_messages(down) == []
    assert any("could not send the password email" in r.getMessage() for r in caplog.records)

"""A real SMTP server for tests, and the mail the app sent: through it, or to its outbox."""
from __future__ import annotations

import email
import email.policy
from contextlib import contextmanager
from pathlib import Path

from aiosmtpd.controller import Controller

from tests.support.network import free_port


class Inbox:
    """An aiosmtpd handler that keeps every message it accepts."""

    def __init__(self) -> None:
        self.envelopes = []
        self.port = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802  (aiosmtpd's hook name)
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        """The accepted messages, parsed."""
        return [email.message_from_bytes(e.content, policy=email.policy.default) for e in self.envelopes]

    @property
    def url(self) -> str:
        """The MAIL_URL that delivers here."""
        return f"smtp://127.0.0.1:{self.port}"


@contextmanager
def running_smtp_server():
    """Run a real SMTP server on a free loopback port and yield its Inbox."""
    inbox = Inbox()
    inbox.port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port)
    controller.start()
    try:
        yield inbox
    finally:
        controller.stop()


def body_text(message) -> str:
    """Return the plain-text body of a parsed email."""
    return message.get_body(preferencelist=("plain",)).get_content()


def outbox_messages(app) -> list[email.message.EmailMessage]:
    """Return the .eml files the app wrote to its outbox, parsed."""
    outbox = Path(app.config["MAIL_OUTBOX_DIR"])
    files = sorted(outbox.glob("*.eml")) if outbox.exists() else []
    return [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]

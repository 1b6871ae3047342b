"""Outgoing email: SMTP when MAIL_URL is set, otherwise .eml files under instance/outbox/ (listed for the
development mail viewer)."""
from __future__ import annotations

import email
import email.policy
import os
import re
import smtplib
import ssl
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlparse

from flask import current_app

from isp_admin.errors import NotFound


def build_message(to: str, subject: str, text: str, attachments=()) -> EmailMessage:
    """Build a plain-text message, with optional (filename, mimetype, bytes) attachments."""
    message = EmailMessage()
    message["From"] = current_app.config["MAIL_FROM"]
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="isp-admin.local")
    message.set_content(text)
    for filename, mimetype, content in attachments:
        maintype, subtype = mimetype.split("/", 1)
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return message


def send_email(to: str, subject: str, text: str, attachments=()) -> str:
    """Send one email and return its Message-ID; raises OSError/SMTPException on failure."""
    message = build_message(to, subject, text, attachments)
    url = current_app.config.get("MAIL_URL")
    if url:
        _send_smtp(url, message)
    else:
        outbox = Path(current_app.config["MAIL_OUTBOX_DIR"])
        outbox.mkdir(parents=True, exist_ok=True)
        (outbox / f"{uuid.uuid4().hex}.eml").write_bytes(bytes(message))
    return message["Message-ID"]


def _send_smtp(url: str, message: EmailMessage) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("smtp", "smtps", "smtp+starttls"):
        raise ValueError("MAIL_URL must start with smtp://, smtps:// or smtp+starttls://")
    host = parsed.hostname or "localhost"
    if parsed.scheme == "smtps":
        client = smtplib.SMTP_SSL(host, parsed.port or 465, timeout=10, context=ssl.create_default_context())
    else:
        client = smtplib.SMTP(host, parsed.port or 25, timeout=10)
    with client:
        if parsed.scheme == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if parsed.username:
            client.login(unquote(parsed.username), unquote(parsed.password or ""))
        client.send_message(message)


# What send_email names its files (a uuid4's hex); anything else in the folder is not ours to show. No separator,
# no leading dot: a name that matches cannot leave the outbox.
OUTBOX_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}\.eml")
HEADER_BYTES = 64 * 1024  # enough for any header block we write; a listing never reads an attachment
MESSAGE_BYTES = 10 * 1024 * 1024  # a bigger file is not one of ours


@dataclass(frozen=True)
class OutboxEntry:
    """One email in the outbox, as the mail viewer lists it."""

    name: str
    subject: str
    to: str
    sent_at: datetime | None


@dataclass(frozen=True)
class OutboxMessage:
    """One email in the outbox, read for the mail viewer: its headers, its text and its attachments."""

    name: str
    headers: list[tuple[str, str]]
    body: str
    attachments: list[tuple[str, str, int]]  # filename, content type, size in bytes

    @property
    def subject(self) -> str:
        """The Subject header ('' when there is none)."""
        return dict(self.headers).get("Subject", "")


def outbox_in_use() -> bool:
    """Return whether mail is written to the outbox folder (no MAIL_URL) rather than sent over SMTP."""
    return not current_app.config.get("MAIL_URL")


def _outbox() -> Path:
    return Path(current_app.config["MAIL_OUTBOX_DIR"])


def list_outbox(page: int, per_page: int) -> tuple[list[OutboxEntry], int]:
    """Return one page of the outbox's emails, newest first, and how many there are in all."""
    folder = _outbox()
    if not folder.is_dir():
        return [], 0
    with os.scandir(folder) as entries:
        files = sorted(((entry.stat(follow_symlinks=False).st_mtime_ns, entry.name) for entry in entries
                        if OUTBOX_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)),
                       reverse=True)
    chosen = files[(page - 1) * per_page:page * per_page]
    return [_entry(folder / name) for _, name in chosen], len(files)


def _entry(path: Path) -> OutboxEntry:
    with path.open("rb") as file:
        headers = BytesHeaderParser(policy=email.policy.default).parsebytes(file.read(HEADER_BYTES))
    return OutboxEntry(path.name, _header(headers, "Subject"), _header(headers, "To"), _date(headers))


def _header(message, name: str) -> str:
    try:
        return str(message.get(name, "") or "")
    except (ValueError, IndexError):  # a malformed header in a hand-made file reads as empty, never a 500
        return ""


def _date(message) -> datetime | None:
    try:
        header = message.get("Date")
        return header.datetime if header is not None else None
    except (ValueError, TypeError, AttributeError, IndexError):
        return None


def read_outbox_message(name: str) -> OutboxMessage:
    """Return one email of the outbox by its file name; NotFound for any name that is not an outbox file."""
    path = _outbox() / name
    if (not OUTBOX_NAME.fullmatch(name) or path.is_symlink() or not path.is_file()
            or path.resolve().parent != _outbox().resolve() or path.stat().st_size > MESSAGE_BYTES):
        raise NotFound("No such email in the outbox.")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    headers = [(key, _header(message, key)) for key in ("From", "To", "Subject", "Date", "Message-ID")]
    return OutboxMessage(name, headers, _body(message), _attachments(message))


def _body(message) -> str:
    try:
        part = message.get_body(preferencelist=("plain", "html"))
        return part.get_content() if part is not None else ""
    except (LookupError, ValueError, AttributeError):  # an unknown charset or a broken part: show what can be read
        payload = message.get_payload(decode=True)
        return payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""


def _attachments(message) -> list[tuple[str, str, int]]:
    found = []
    for part in message.iter_attachments() if message.is_multipart() else ():
        content = part.get_payload(decode=True) or b""
        found.append((part.get_filename() or "(unnamed)", part.get_content_type(), len(content)))
    return found

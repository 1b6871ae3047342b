"""Outgoing email: SMTP when MAIL_URL is set, otherwise .eml files under instance/outbox/."""
from __future__ import annotations

import smtplib
import ssl
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlparse

from flask import current_app


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

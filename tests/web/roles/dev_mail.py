"""Role cells for the development mail viewer: admins only (the outbox holds every staff member's password links).

The matrix app is a testing app with no MAIL_URL, so its mail goes to the outbox folder and the viewer is on; in
production or with MAIL_URL set every /dev/ URL is a 404 for everyone (tests/web/test_dev_mail.py).
"""
from __future__ import annotations

from pathlib import Path

from flask import current_app

from tests.web.roles import ADMINS, Route

ROUTES = [
    Route("GET", "/dev/mail/", ADMINS),
    Route("GET", "/dev/mail/<dev_mail>", ADMINS),
]
MESSAGE = "matrix0000000000000000000000000.eml"


def records(world: dict) -> dict:
    """Write one email into the matrix app's outbox for the viewer to show."""
    outbox = Path(current_app.config["MAIL_OUTBOX_DIR"])
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / MESSAGE).write_bytes(b"From: a@isp.example\r\nTo: b@isp.example\r\nSubject: Matrix\r\n\r\nHello\r\n")
    return {"dev_mail": MESSAGE}

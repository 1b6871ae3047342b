"""Staff sign-in in tests: the form posts, the messages shown, reset links, client addresses of a test's own."""
from __future__ import annotations

import itertools
import re
import uuid

from tests.factories import PASSWORD
from tests.support.smtp import body_text

FAILED = "Invalid email or password."
RESET_SENT = "If that address belongs to an account, a reset link is on its way."
NEW_PASSWORD = "a brand new passphrase 42"
_addresses = itertools.count(1)


def flashes(response) -> list[str]:
    """Return the texts of the flash alerts on an HTML page."""
    found = re.findall(r'<div class="alert [^"]*" role="alert">\s*(.*?)\s*<button', response.get_data(as_text=True),
                       re.S)
    return [re.sub(r"\s+", " ", text) for text in found]


def reset_path(message) -> str:
    """Return the /reset-password/<token> path from an emailed link."""
    match = re.search(r"https?://[^/\s]+(/reset-password/[\w.\-]+)", body_text(message))
    assert match, body_text(message)
    return match.group(1)


def sign_in(client, email_: str, password: str = PASSWORD, **extra):
    """Post the sign-in form."""
    return client.post("/login", data={"email": email_, "password": password, **extra})


def sign_in_from(address: dict, client, email_: str, password: str = PASSWORD):
    """Post the sign-in form from a client address (an environ from unique_address())."""
    return client.post("/login", data={"email": email_, "password": password}, environ_base=address)


def is_signed_in(client) -> bool:
    """Whether the dashboard opens (rather than redirecting to the sign-in page)."""
    response = client.get("/")
    if response.status_code == 302:
        assert response.headers["Location"].startswith("/login")
        return False
    assert response.status_code == 200
    return True


def unique_address() -> dict:
    """Environ for requests from a client address no other test uses, so rate-limit counters start at zero.

    Flask-Limiter keeps the first RATELIMIT_KEY_PREFIX it sees for the whole process, so a per-test prefix
    would not isolate the counters; a per-test client address does.
    """
    return {"REMOTE_ADDR": f"10.{uuid.uuid4().int % 250}.{next(_addresses) % 250}.{uuid.uuid4().int % 250 + 1}"}

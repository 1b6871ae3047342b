"""Fixtures shared by the web tests."""
from __future__ import annotations

import pytest

from tests.support.smtp import running_smtp_server


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) collecting what the app sends."""
    with running_smtp_server() as inbox:
        yield inbox

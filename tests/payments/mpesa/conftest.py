"""Fixtures for the M-Pesa tests: the Daraja double, and an app whose ledger is in KES with M-Pesa switched on."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from isp_admin.services.payments.providers.mpesa import forget_tokens
from tests.conftest import clean_context
from tests.support.daraja import Daraja, enable_mpesa, mpesa_settings, running_daraja


@pytest.fixture
def daraja() -> Iterator[Daraja]:
    """The worker's Daraja double with default answers (STK query ResultCode 0) and an empty request log."""
    double = running_daraja()
    double.mock.reset()
    forget_tokens()  # each test sees its own OAuth call
    yield double
    double.mock.reset()


@pytest.fixture
def mpesa_app(make_app, daraja) -> Iterator:
    """A KES app pointed at the double, M-Pesa enabled; the app context is pushed over an empty database."""
    with clean_context(make_app(**mpesa_settings(daraja.url))) as app:
        enable_mpesa()
        yield app

"""The commands' unit of work: an action runs as the system, commits once, and a domain error becomes the
command's error message (exit status 1), worded once for every command."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from isp_admin.errors import AppError
from isp_admin.services.platform.audit import SYSTEM, acting_as
from isp_admin.unit_of_work import unit_of_work


def refusal(exc: AppError) -> click.ClickException:
    """The command-line wording of a domain error: its message, then each field's reason."""
    detail = "; ".join(f"{k}: {v}" for k, v in exc.details.items())
    return click.ClickException(f"{exc.message} {detail}".strip())


@contextmanager
def command_action() -> Iterator[None]:
    """Run a command's action as the system in one unit of work; a refusal exits with its message."""
    try:
        with acting_as(SYSTEM), unit_of_work():
            yield
    except AppError as exc:
        raise refusal(exc) from None

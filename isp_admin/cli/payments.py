"""`flask payments …`: the online payments' status sweep by hand (the body the periodic job runs)."""
from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from isp_admin.services.payments.poll import poll_pending
from isp_admin.services.platform.audit import SYSTEM, acting_as
from isp_admin.services.platform.clock import utcnow
from isp_admin.unit_of_work import commit_step

payments_cli = AppGroup("payments", help="Online payments: ask the providers about payments still pending.")


@payments_cli.command("poll")
@click.option("--limit", type=click.IntRange(1, 10_000), default=200, show_default=True,
              help="Pending payments asked about (oldest first) and expired, at most, in this run.")
def poll_command(limit: int) -> None:
    """Ask the providers about payments whose notification never came, expire abandoned ones; exit 1 on a failure."""
    # The periodic job's own body (isp_admin.jobs.tasks.poll_payments): each attempt is committed on its own.
    with acting_as(SYSTEM):
        counts = poll_pending(utcnow(), commit_step, limit=limit)
    commit_step()
    click.echo(", ".join(f"{key}={value}" for key, value in counts.items()))
    if counts["errors"]:
        click.echo(f"{counts['errors']} status queries failed: see the log and the payments in flight.", err=True)
        sys.exit(1)

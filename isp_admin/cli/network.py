"""`flask network …`: the CoA sweep and the billing ↔ network check by hand (the bodies the workers run)."""
from __future__ import annotations

import sys

import click
from flask.cli import AppGroup

from isp_admin.cli.unit import command_action
from isp_admin.services.network import coa, reconcile
from isp_admin.services.platform.audit import SYSTEM, acting_as
from isp_admin.unit_of_work import commit_step

network_cli = AppGroup("network", help="Network truth: the CoA sweep and the billing <-> network check.")


@network_cli.command("reconcile")
@click.option("--limit", type=click.IntRange(1, reconcile.MAX_LIMIT), default=1000, show_default=True,
              help="Rows listed per kind (the counts are always complete).")
def reconcile_command(limit: int) -> None:
    """List every session and subscription whose network state disagrees with billing; exit 1 if there is any."""
    with command_action():
        report, run = reconcile.check(limit=limit, triggered_by="cli")
        run_id = run.id
    for row in report.rows:
        who = f"{row.customer_name} (subscription {row.subscription_id})" if row.subscription_id else "nobody"
        where = f" session {row.session_id} on {row.nas}" if row.radacct_id else ""
        click.echo(f"{row.kind:<22} {row.login or '-'} / {who}{where}: {row.detail} "
                   f"[fix: {', '.join(row.fixes)}{'; one is on its way' if row.queued else ''}]")
    for kind in reconcile.KINDS:
        if report.counts[kind] > limit:
            click.echo(f"... and {report.counts[kind] - limit} more {kind} (--limit).")
    if report.coa["failed"]:
        click.echo(f"{report.coa['failed']} CoA requests failed: see /network/?status=failed.", err=True)
    if report.total:
        counts = ", ".join(f"{kind}={count}" for kind, count in report.counts.items() if count)
        click.echo(f"{report.total} mismatches ({counts}); fix them on /network/mismatches "
                   f"(recorded as job run #{run_id}).", err=True)
        sys.exit(1)
    click.echo(f"Billing and the network agree (recorded as job run #{run_id}).")


@network_cli.command("dispatch")
def dispatch_command() -> None:
    """Turn committed subscription changes into Disconnect/CoA requests and send what is due; exit 1 on a failure."""
    # The minute job's own body (isp_admin.jobs.network.dispatch_network): each packet sent is committed at once.
    with acting_as(SYSTEM):
        counts = coa.dispatch(commit_step)
    commit_step()
    click.echo(", ".join(f"{key}={value}" for key, value in counts.items()))
    if counts["failed"]:
        click.echo(f"{counts['failed']} requests failed: see /network/?status=failed.", err=True)
        sys.exit(1)

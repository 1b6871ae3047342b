"""`flask data …`: realistic test data in bulk, and the demo set-up for `make run`."""
from __future__ import annotations

import secrets
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from isp_admin.cli.unit import command_action
from isp_admin.extensions import db
from isp_admin.services.identity import users as user_service
from isp_admin.services.platform.clock import today
from isp_admin.services.portal import accounts as portal_accounts
from isp_admin.services.sample_data.demo import bill_history, network_history, portal_demo_customer
from isp_admin.services.sample_data.generator import MAX_HISTORY_MONTHS, generate
from isp_admin.unit_of_work import commit_once

data_cli = AppGroup("data", help="Test data and demo set-up.")


@data_cli.command("generate-test-data")
@click.option("--customers", "count", type=click.IntRange(1, 5_000_000), default=1000, show_default=True)
@click.option("--seed", type=int, default=None, help="Random seed, for repeatable data.")
@click.option("--history-months", "months", type=click.IntRange(0, MAX_HISTORY_MONTHS), default=0,
              show_default=True, help="Past months to bill with the real billing run, ~80% of invoices paid.")
def generate_test_data(count: int, seed: int | None, months: int) -> None:
    """Load COUNT realistic customers with plans and subscriptions, and a billing history, in bulk."""
    # The system loads test data: its invoices, payments and audit events say so, whoever ran before in-process.
    with click.progressbar(length=count, label="Customers") as bar, command_action():
        result = generate(count, seed=seed, progress=bar.update, history_months=months)
    rate = f"{result.customers / max(result.seconds, 1e-9):,.0f} customers/s"
    if not months:
        click.echo(f"Loaded {result.customers} customers and {result.subscriptions} subscriptions "
                   f"in {result.seconds:.1f}s ({rate}).")
        return
    click.echo(f"Loaded {result.customers} customers, {result.subscriptions} subscriptions, {result.invoices} "
               f"invoices and {result.payments} payments in {result.seconds:.1f}s ({rate}; {months} months of "
               f"billing history in {result.history_seconds:.1f}s).")


@data_cli.command("demo")
@click.option("--customers", "count", type=int, default=250, show_default=True)
def demo(count: int) -> None:
    """Create a demo admin and a demo subscriber's portal login (random passwords, kept in instance/) and demo
    data, once; print both logins."""
    credentials = Path(current_app.instance_path) / "demo-login.txt"
    email = "admin@example.com"
    if user_service.find_by_email(email) is None:
        password, portal_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
        with command_action():
            user_service.create_user(email, "Demo Admin", "admin", password)
            generate(count, seed=42)
            db.session.flush()
            bill_history(today())
            network_history(today())
            chosen = portal_demo_customer()
            account_number = chosen[1] if chosen else "-"
            if chosen:
                portal_accounts.open_with_password(chosen[0], portal_password)
        credentials.write_text(f"{email}\n{password}\n{account_number}\n{portal_password}\n")
        credentials.chmod(0o600)
    lines = credentials.read_text().split() if credentials.exists() else []
    email, password, account_number, portal_password = (lines + [email, "?", "-", "?"][len(lines):])[:4]
    click.echo("")
    click.echo("  ISP Admin is starting on http://127.0.0.1:5000")
    click.echo(f"  Sign in as {email} with password {password}")
    if account_number != "-":
        click.echo(f"  Subscriber portal: http://127.0.0.1:5000/portal/ as {account_number} with password "
                   f"{portal_password}")
    click.echo(f"  (kept in {credentials})")
    click.echo("")


@data_cli.command("cleanup-old-data")
@click.option("--days", type=click.IntRange(1, None), default=730, show_default=True,
              help="Keep this many days of notifications and job runs.")
@click.option("--dry-run", "preview", is_flag=True, help="Count what would be deleted; delete nothing.")
def cleanup_old_data(days: int, preview: bool) -> None:
    """Delete delivered notifications and finished job runs older than DAYS, and expired API idempotency keys.

    Money records are never touched.
    """
    from isp_admin.services.platform.retention import cleanup_old_data as cleanup

    result = commit_once(cleanup, days, dry_run=preview, keep=lambda _: not preview)
    verb = "Would delete" if preview else "Deleted"
    click.echo(f"{verb} {result.notifications} notifications and {result.job_runs} job runs older than {days} days "
               f"(kept {result.job_runs_kept} old job runs that issued invoices).")
    click.echo(f"{verb} {result.idempotency_keys} API idempotency keys older than 24 hours.")

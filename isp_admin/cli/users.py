"""`flask users …`: manage staff accounts from the shell (the first admin starts here)."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from isp_admin.cli.unit import command_action
from isp_admin.models.users import ROLES
from isp_admin.services.identity import users as user_service

users_cli = AppGroup("users", help="Manage staff users.")


@users_cli.command("create")
@click.option("--email", required=True, help="Sign-in email.")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--name", default=None, help="Display name (defaults to the email's local part).")
@click.password_option("--password", prompt="Password (at least 12 characters)",
                       help="Prompted for when omitted; never pass it on a shared machine's command line.")
def create_user(email: str, role: str, name: str | None, password: str) -> None:
    """Create a staff user with a password."""
    with command_action():
        user = user_service.create_user(email, name or email.split("@")[0], role, password)
    click.echo(f"Created {user.role} {user.email} (id {user.id}).")

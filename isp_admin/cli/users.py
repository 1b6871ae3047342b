"""`flask users …`: manage staff accounts from the shell (the first admin starts here)."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from isp_admin.errors import AppError
from isp_admin.extensions import db
from isp_admin.models.users import ROLES
from isp_admin.services.identity import users as user_service
from isp_admin.services.platform.audit import SYSTEM, acting_as

users_cli = AppGroup("users", help="Manage staff users.")


@users_cli.command("create")
@click.option("--email", required=True, help="Sign-in email.")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--name", default=None, help="Display name (defaults to the email's local part).")
@click.password_option("--password", prompt="Password (at least 12 characters)",
                       help="Prompted for when omitted; never pass it on a shared machine's command line.")
def create_user(email: str, role: str, name: str | None, password: str) -> None:
    """Create a staff user with a password."""
    try:
        with acting_as(SYSTEM):
            user = user_service.create_user(email, name or email.split("@")[0], role, password)
        db.session.commit()
    except AppError as exc:
        db.session.rollback()
        detail = "; ".join(f"{k}: {v}" for k, v in exc.details.items())
        raise click.ClickException(f"{exc.message} {detail}".strip()) from None
    click.echo(f"Created {user.role} {user.email} (id {user.id}).")

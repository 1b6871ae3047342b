"""`flask tokens …`: create and revoke API tokens from the shell."""
from __future__ import annotations

from datetime import timedelta

import click
from flask.cli import AppGroup

from isp_admin.cli.unit import command_action
from isp_admin.models.base import utcnow
from isp_admin.services.identity import tokens as token_service
from isp_admin.services.identity import users as user_service

tokens_cli = AppGroup("tokens", help="Manage API tokens.")


@tokens_cli.command("create")
@click.option("--email", required=True, help="The owner's sign-in email.")
@click.option("--name", required=True, help="What the token is for.")
@click.option("--scopes", default="read", show_default=True, help="Comma-separated: read, write, billing, health.")
@click.option("--expires-days", type=click.IntRange(min=1), default=90, show_default=True)
def create_token(email: str, name: str, scopes: str, expires_days: int) -> None:
    """Create a token and print its secret once."""
    user = user_service.find_by_email(email)
    if user is None:
        raise click.ClickException(f"No user with the email {email}.")
    with command_action():
        token, secret = token_service.create_token(user.id, name, scopes, utcnow() + timedelta(days=expires_days))
    click.echo(f"Created token {token.id} ({token.prefix}…) for {user.email}, scopes {token.scopes}, "
               f"expires {token.expires_at:%Y-%m-%d}.")
    click.echo("Copy the secret now; it is not shown again:")
    click.echo(secret)


@tokens_cli.command("revoke")
@click.option("--id", "token_id", type=int, required=True, help="The token's id.")
def revoke_token(token_id: int) -> None:
    """Revoke a token."""
    with command_action():
        token = token_service.revoke_token(token_id, None)
    click.echo(f"Revoked token {token_id} ({token.prefix}…).")

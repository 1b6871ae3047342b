"""The `flask` command groups, registered in one explicit list."""
from flask import Flask


def register(app: Flask) -> None:
    """Attach every command group to the app."""
    from isp_admin.cli import backup  # noqa: F401  (adds `flask data backup` and `restore`)
    from isp_admin.cli.billing import billing_cli
    from isp_admin.cli.data import data_cli
    from isp_admin.cli.perf import perf_cli
    from isp_admin.cli.rq import rq_cli
    from isp_admin.cli.tokens import tokens_cli
    from isp_admin.cli.users import users_cli

    for group in (users_cli, data_cli, billing_cli, rq_cli, tokens_cli, perf_cli):
        app.cli.add_command(group)

"""The `flask` command groups, registered in one explicit list and imported only when the command line runs one.

A web worker builds the same app as the CLI but never runs a command; importing every group would load the test
data generator, the benchmark client, the backup code and Flask-Migrate's Alembic into each worker.
"""
from __future__ import annotations

from collections.abc import Callable

import click
from flask import Flask


class DeferredGroup(click.Command):
    """A named command whose real group is imported when the command line reaches it (or asks for its help)."""

    def __init__(self, name: str, load: Callable[[], click.Command], short_help: str):
        super().__init__(name, help=short_help, short_help=short_help)
        self.load = load

    def make_context(self, info_name, args, parent=None, **extra):
        """Build the real group's context: click then parses and invokes that group, as if registered directly."""
        return self.load().make_context(info_name, args, parent=parent, **extra)


def _users():
    from isp_admin.cli.users import users_cli

    return users_cli


def _data():
    from isp_admin.cli import backup  # noqa: F401  (adds `flask data backup` and `restore`)
    from isp_admin.cli.data import data_cli

    return data_cli


def _billing():
    from isp_admin.cli.billing import billing_cli

    return billing_cli


def _rq():
    from isp_admin.cli.rq import rq_cli

    return rq_cli


def _tokens():
    from isp_admin.cli.tokens import tokens_cli

    return tokens_cli


def _perf():
    from isp_admin.cli.perf import perf_cli

    return perf_cli


def _network():
    from isp_admin.cli.network import network_cli

    return network_cli


def _payments():
    from isp_admin.cli.payments import payments_cli

    return payments_cli


def _db():
    # Flask-Migrate's own group; its commands reach app.extensions["migrate"], which loads Alembic then.
    from flask_migrate.cli import db

    return db


# name: (loader, the group's one-line help, shown by `flask --help` without importing the group)
GROUPS = {
    "users": (_users, "Manage staff users."),
    "data": (_data, "Test data and demo set-up."),
    "billing": (_billing, "Billing and collections steps."),
    "rq": (_rq, "Background workers and the nightly schedule."),
    "tokens": (_tokens, "Manage API tokens."),
    "perf": (_perf, "Measure the API's latency and queries per request."),
    "network": (_network, "Network truth: the CoA sweep and the billing <-> network check."),
    "payments": (_payments, "Online payments: ask the providers about payments still pending."),
    "db": (_db, "Perform database migrations."),
}


def register(app: Flask) -> None:
    """Attach every command group to the app."""
    for name, (load, short_help) in GROUPS.items():
        app.cli.add_command(DeferredGroup(name, load, short_help))

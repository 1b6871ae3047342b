"""`flask data backup` and `flask data restore`: encrypted, compressed copies of the database."""
from __future__ import annotations

import os
from pathlib import Path

import click

from isp_admin.cli.data import data_cli
from isp_admin.services.platform import backup as backup_service


def _key() -> str:
    key = os.environ.get(backup_service.KEY_ENV, "")
    if not key:
        raise click.ClickException(f"Set {backup_service.KEY_ENV}: backups are always encrypted.")
    return key


@data_cli.command("backup")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for the backup file (created if missing).")
def backup(out_dir: Path) -> None:
    """Write a compressed, encrypted backup of the database (key from BACKUP_ENCRYPTION_KEY)."""
    try:
        info = backup_service.backup(out_dir, _key())
    except backup_service.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    rows = sum(info.row_counts.values())
    click.echo(f"Backed up {info.engine} ({rows:,} rows in {len(info.row_counts)} tables, revision "
               f"{info.revision or '-'}) to {info.path} ({info.size_bytes:,} bytes).")


@data_cli.command("restore")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def restore(path: Path, yes: bool) -> None:
    """Replace the database with a backup's contents (stop the web and workers first)."""
    key = _key()
    try:
        meta = backup_service.read_info(path, key)
    except backup_service.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    rows = sum(meta["row_counts"].values())
    click.echo(f"Backup of {meta['created_at']}: {meta['engine']}, {rows:,} rows, revision {meta['revision']}.")
    if not yes:
        click.confirm("This REPLACES the current database with the backup. Continue?", abort=True)
    try:
        backup_service.restore(path, key)
    except backup_service.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    counts = backup_service.row_counts()
    mismatched = {t: (n, counts.get(t)) for t, n in meta["row_counts"].items() if counts.get(t) != n}
    if mismatched:
        raise click.ClickException(f"Restored, but row counts differ from the backup: {mismatched}")
    click.echo(f"Restored {rows:,} rows; every table's row count matches the backup.")

"""`flask data backup` / `restore`: a populated database survives the round trip, on PostgreSQL and SQLite.

The PostgreSQL backup is restored into a different, empty database (the disaster case: a new server) after
`flask db upgrade`-free restore, then compared table by table and customer balance by customer balance.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from isp_admin import create_app
from isp_admin.extensions import db
from isp_admin.models import Invoice, Payment
from isp_admin.services.platform import backup as backup_service
from isp_admin.services.platform.audit import SYSTEM, acting_as
from isp_admin.services.platform.clock import today
from isp_admin.services.sample_data.demo import bill_history
from isp_admin.services.sample_data.generator import generate
from tests.conftest import RUN_ID, app_config, create_database, drop_database

KEY = "a long backup passphrase for tests"


def _populate() -> None:
    with acting_as(SYSTEM):
        generate(60, seed=7)
        db.session.flush()
        bill_history(today())
    db.session.commit()


def _balances() -> dict[int, int]:
    owed = dict(db.session.execute(
        select(Invoice.customer_id, func.sum(Invoice.total_cents - Invoice.amount_paid_cents
                                             - Invoice.credit_applied_cents)).group_by(Invoice.customer_id)).all())
    paid = dict(db.session.execute(select(Payment.customer_id, func.sum(Payment.amount_cents))
                                   .group_by(Payment.customer_id)).all())
    return {customer: int(owed.get(customer, 0)) - int(paid.get(customer, 0)) for customer in owed.keys() | paid}


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv(backup_service.KEY_ENV, KEY)


def _app(url: str, tmp_path: Path, name: str):
    app = create_app(app_config(url, None, tmp_path / name))
    return app


def _migrate(app) -> None:
    from flask_migrate import upgrade

    with app.app_context():
        upgrade()


def test_a_postgresql_backup_restores_into_an_empty_database_with_every_row_and_balance(tmp_path, key_env):
    source_name, target_name = f"isp_backup_src_{RUN_ID}", f"isp_backup_dst_{RUN_ID}"
    source = _app(create_database(source_name), tmp_path, "src")
    target = _app(create_database(target_name), tmp_path, "dst")
    try:
        _migrate(source)
        with source.app_context():
            _populate()
            counts, balances = backup_service.row_counts(), _balances()
            assert counts["customers"] == 60 and counts["invoices"] > 0 and counts["payments"] > 0
        result = source.test_cli_runner().invoke(args=["data", "backup", "--out", str(tmp_path / "backups")])
        assert result.exit_code == 0, result.output
        [file] = list((tmp_path / "backups").glob("*.ispbak"))
        assert oct(file.stat().st_mode)[-3:] == "600"
        raw = file.read_bytes()
        assert b"customers" not in raw and b"INV-" not in raw  # encrypted, not merely compressed

        restored = target.test_cli_runner().invoke(args=["data", "restore", str(file), "--yes"])
        assert restored.exit_code == 0, restored.output
        assert "every table's row count matches" in restored.output
        with target.app_context():
            assert backup_service.row_counts() == counts
            assert _balances() == balances
    finally:
        for app in (source, target):
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
        drop_database(source_name)
        drop_database(target_name)


def test_an_sqlite_backup_round_trips_over_a_changed_database(tmp_path, key_env):
    app = _app(f"sqlite:///{tmp_path / 'live.sqlite3'}", tmp_path, "lite")
    _migrate(app)
    with app.app_context():
        _populate()
        counts, balances = backup_service.row_counts(), _balances()
    runner = app.test_cli_runner()
    assert runner.invoke(args=["data", "backup", "--out", str(tmp_path / "b")]).exit_code == 0
    [file] = list((tmp_path / "b").glob("*.ispbak"))
    with app.app_context():  # the disaster: money records lost after the backup
        db.session.execute(db.text("DELETE FROM payment_allocations"))
        db.session.execute(db.text("DELETE FROM payments"))
        db.session.commit()
        assert backup_service.row_counts()["payments"] == 0
    result = runner.invoke(args=["data", "restore", str(file), "--yes"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert backup_service.row_counts() == counts
        assert _balances() == balances
        db.engine.dispose()


def test_a_wrong_key_or_a_damaged_file_is_refused_and_nothing_is_replaced(tmp_path, key_env, monkeypatch):
    app = _app(f"sqlite:///{tmp_path / 'live.sqlite3'}", tmp_path, "lite")
    _migrate(app)
    with app.app_context():
        _populate()
        counts = backup_service.row_counts()
    runner = app.test_cli_runner()
    assert runner.invoke(args=["data", "backup", "--out", str(tmp_path / "b")]).exit_code == 0
    [file] = list((tmp_path / "b").glob("*.ispbak"))
    data = file.read_bytes()

    truncated = tmp_path / "truncated.ispbak"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = tmp_path / "flipped.ispbak"
    flipped.write_bytes(data[:-10] + bytes([data[-10] ^ 0x01]) + data[-9:])
    for damaged, message in ((truncated, "truncated"), (flipped, "wrong key, or the file is damaged")):
        result = runner.invoke(args=["data", "restore", str(damaged), "--yes"])
        assert result.exit_code != 0 and message in result.output

    monkeypatch.setenv(backup_service.KEY_ENV, "another passphrase entirely")
    result = runner.invoke(args=["data", "restore", str(file), "--yes"])
    assert result.exit_code != 0 and "wrong key" in result.output
    monkeypatch.delenv(backup_service.KEY_ENV)
    result = runner.invoke(args=["data", "backup", "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and backup_service.KEY_ENV in result.output
    with app.app_context():
        assert backup_service.row_counts() == counts
        db.engine.dispose()


def test_restore_asks_before_replacing(tmp_path, key_env):
    app = _app(f"sqlite:///{tmp_path / 'live.sqlite3'}", tmp_path, "lite")
    _migrate(app)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["data", "backup", "--out", str(tmp_path / "b")]).exit_code == 0
    [file] = list((tmp_path / "b").glob("*.ispbak"))
    result = runner.invoke(args=["data", "restore", str(file)], input="n\n")
    assert result.exit_code != 0 and "REPLACES the current database" in result.output
    assert os.path.exists(tmp_path / "live.sqlite3")

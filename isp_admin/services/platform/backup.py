"""Encrypted, compressed backups: pg_dump for PostgreSQL, SQLite's online backup API for SQLite.

File layout (one file per backup, `isp-admin-<engine>-<UTC time>.ispbak`):
    MAGIC, a 16-byte scrypt salt, then frames of [4-byte big-endian length][Fernet token].
Each frame's plaintext is [4-byte frame index][1-byte last flag][data]: the index and the flag are inside the
authenticated encryption, so frames cannot be reordered, dropped or the file truncated without restore noticing.
Frame 0 holds the metadata (engine, time, migration revision, row counts); the rest is the dump, compressed
(pg_dump's custom format compresses itself; an SQLite file is gzip-compressed here).
"""
from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import func, inspect, select, table, text
from sqlalchemy.engine import make_url

from isp_admin.extensions import db

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

MAGIC = b"ISPADMIN-BACKUP-1\n"
SALT_BYTES = 16
CHUNK = 4 * 1024 * 1024
KEY_ENV = "BACKUP_ENCRYPTION_KEY"
MIN_KEY_LENGTH = 16


class BackupError(Exception):
    """A backup or restore cannot proceed; the message says why and what to do."""


@dataclass
class BackupInfo:
    """What a backup holds: where it is, its engine, revision and row counts."""

    path: Path
    engine: str
    created_at: str
    revision: str | None
    row_counts: dict[str, int]
    size_bytes: int


def _fernet(passphrase: str, salt: bytes) -> Fernet:
    # Imported here: cryptography's bindings cost every web worker ~8 MB, and only backup and restore use them.
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    if not passphrase or len(passphrase) < MIN_KEY_LENGTH:
        raise BackupError(f"Set {KEY_ENV} to a secret of at least {MIN_KEY_LENGTH} characters.")
    key = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())
    return Fernet(base64.urlsafe_b64encode(key))


def _frame(index: int, last: bool, data: bytes) -> bytes:
    return struct.pack(">IB", index, int(last)) + data


def row_counts() -> dict[str, int]:
    """Count the rows of every application table (alembic's own table aside)."""
    names = sorted(n for n in inspect(db.engine).get_table_names() if n != "alembic_version")
    with db.engine.connect() as conn:
        return {name: conn.execute(select(func.count()).select_from(table(name))).scalar_one() for name in names}


def _revision() -> str | None:
    with db.engine.connect() as conn:
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except Exception:  # noqa: BLE001  (a database made by create_all has no alembic table)
            conn.rollback()
            return None


def _pg_args(url) -> tuple[list[str], dict]:
    """Connection arguments for pg_dump/pg_restore, with the password in the environment, never in argv."""
    args = ["--host", url.host or "127.0.0.1", "--port", str(url.port or 5432),
            "--username", url.username or "postgres", "--dbname", url.database]
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = url.password
    return args, env


def _dump(engine: str, url, workdir: Path) -> Path:
    target = workdir / "dump"
    if engine == "postgresql":
        args, env = _pg_args(url)
        result = subprocess.run(["pg_dump", "--format=custom", "--compress=6", "--no-owner", "--no-privileges",
                                 "--file", str(target), *args], env=env, capture_output=True, text=True)
        if result.returncode:
            raise BackupError(f"pg_dump failed: {result.stderr.strip()[:500]}")
    else:
        import sqlite3  # only an SQLite deployment needs it (SQLAlchemy's dialect loads it there anyway)

        copy = workdir / "copy.sqlite3"
        source = sqlite3.connect(url.database)
        dest = sqlite3.connect(copy)
        try:
            source.backup(dest)  # a consistent snapshot even while the app writes
        finally:
            dest.close()
            source.close()
        with open(copy, "rb") as raw, gzip.open(target, "wb", compresslevel=6) as packed:
            shutil.copyfileobj(raw, packed, CHUNK)
    return target


def backup(out_dir: Path, passphrase: str) -> BackupInfo:
    """Write an encrypted backup of the app's database into `out_dir`; return what it holds."""
    url = make_url(str(db.engine.url))
    engine = db.engine.dialect.name
    if engine not in ("postgresql", "sqlite") or (engine == "sqlite" and not url.database):
        raise BackupError(f"Cannot back up a {engine} database at {url.render_as_string(hide_password=True)}.")
    salt = os.urandom(SALT_BYTES)
    fernet = _fernet(passphrase, salt)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC)
    meta = {"engine": engine, "created_at": stamp.isoformat(), "revision": _revision(), "row_counts": row_counts()}
    final = out_dir / f"isp-admin-{engine}-{stamp:%Y%m%dT%H%M%SZ}.ispbak"
    with tempfile.TemporaryDirectory(prefix="isp-backup-") as tmp:
        dump = _dump(engine, url, Path(tmp))
        partial = final.with_suffix(".partial")
        with open(dump, "rb") as source, open(partial, "wb") as sink:
            sink.write(MAGIC + salt)
            index, pending = 0, json.dumps(meta).encode()
            while True:
                chunk = source.read(CHUNK)
                last = not chunk
                token = fernet.encrypt(_frame(index, last, pending))
                sink.write(struct.pack(">I", len(token)) + token)
                if last:
                    break
                index, pending = index + 1, chunk
        os.chmod(partial, 0o600)
        os.replace(partial, final)  # a backup file exists only once it is whole
    return BackupInfo(final, engine, meta["created_at"], meta["revision"], meta["row_counts"], final.stat().st_size)


def _frames(path: Path, passphrase: str):
    from cryptography.fernet import InvalidToken

    with open(path, "rb") as source:
        if source.read(len(MAGIC)) != MAGIC:
            raise BackupError(f"{path} is not an ISP Admin backup.")
        fernet = _fernet(passphrase, source.read(SALT_BYTES))
        expected = 0
        while True:
            size = source.read(4)
            if len(size) < 4:
                raise BackupError("The backup is truncated (its last part is missing).")
            length = struct.unpack(">I", size)[0]
            token = source.read(length)
            if len(token) < length:
                raise BackupError("The backup is truncated (its last part is missing).")
            try:
                plain = fernet.decrypt(token)
            except InvalidToken:
                raise BackupError("Cannot decrypt the backup: wrong key, or the file is damaged.") from None
            index, last = struct.unpack(">IB", plain[:5])
            if index != expected:
                raise BackupError("The backup's parts are out of order or missing.")
            yield plain[5:]
            if last:
                return
            expected += 1


def read_info(path: Path, passphrase: str) -> dict:
    """Return a backup's metadata (engine, time, revision, row counts) without restoring it."""
    return json.loads(next(iter(_frames(path, passphrase))))


def restore(path: Path, passphrase: str) -> dict:
    """Replace the app's database with the backup's contents; return the backup's metadata."""
    url = make_url(str(db.engine.url))
    engine = db.engine.dialect.name
    frames = _frames(path, passphrase)
    meta = json.loads(next(frames))
    if meta["engine"] != engine:
        raise BackupError(f"This is a {meta['engine']} backup; the app's database is {engine}.")
    with tempfile.TemporaryDirectory(prefix="isp-restore-") as tmp:
        dump = Path(tmp) / "dump"
        with open(dump, "wb") as sink:
            for data in frames:  # every frame is authenticated before anything is replaced
                sink.write(data)
        db.session.remove()
        db.engine.dispose()  # no pooled connection may hold locks on what is about to be replaced
        if engine == "postgresql":
            args, env = _pg_args(url)
            result = subprocess.run(["pg_restore", "--clean", "--if-exists", "--no-owner", "--no-privileges",
                                     "--single-transaction", "--exit-on-error", *args, str(dump)],
                                    env=env, capture_output=True, text=True)
            if result.returncode:
                raise BackupError(f"pg_restore failed (nothing was changed): {result.stderr.strip()[:500]}")
        else:
            import sqlite3

            restored = Path(tmp) / "restored.sqlite3"
            with gzip.open(dump, "rb") as packed, open(restored, "wb") as raw:
                shutil.copyfileobj(packed, raw, CHUNK)
            source, dest = sqlite3.connect(restored), sqlite3.connect(url.database)
            try:
                source.backup(dest)  # page by page into the live file, under SQLite's own locking
            finally:
                dest.close()
                source.close()
    return meta

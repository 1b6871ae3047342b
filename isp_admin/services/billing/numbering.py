"""Gapless document numbers (INV-2026-000123), allocated inside the issuing transaction.

The sequence row is updated in place: concurrent issuers queue on its row lock, and a rolled-back
transaction gives its numbers back, so the numbers stay unique AND gapless.
"""
from __future__ import annotations

from sqlalchemy import update

from isp_admin.extensions import db
from isp_admin.models import DocumentSequence
from isp_admin.services.platform.bulk import is_postgres


def allocate_numbers(prefix: str, year: int, count: int) -> list[str]:
    """Allocate `count` consecutive numbers for `prefix` in `year`."""
    if count <= 0:
        return []
    table = DocumentSequence.__table__
    bump = (update(table).where(table.c.prefix == prefix, table.c.year == year)
            .values(last_number=table.c.last_number + count).returning(table.c.last_number))
    last = db.session.execute(bump).scalar()
    if last is None:
        if is_postgres():
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        db.session.execute(insert(table).values(prefix=prefix, year=year, last_number=0).on_conflict_do_nothing())
        last = db.session.execute(bump).scalar()
    return [f"{prefix}-{year}-{n:06d}" for n in range(last - count + 1, last + 1)]

"""PPPoE logins unique whatever their case; RADIUS and the panel find a login however a router types it

A login is stored as typed and compared lower-cased everywhere: one live subscription per lower(pppoe_username).
The RADIUS views are unchanged (they show the login as stored); FreeRADIUS's per-user queries compare
LOWER(username) with the lower-cased login the router sent (deploy/freeradius/sql), which PostgreSQL pushes through
the view onto this index. radacct and radpostauth keep the login as the router sent it, indexed on lower(username)
so the panel finds a login's sessions and attempts in whatever case they came.

Live logins that already differ only in case cannot both keep working under that rule, and renaming one would
lock its customer's router out unannounced: the upgrade stops and lists them, for staff to rename (docs/network.md).

Revision ID: 0011_pppoe_case
Revises: 0010_customer_actor_lookups
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_pppoe_case'
down_revision = '0010_customer_actor_lookups'
branch_labels = None
depends_on = None

LIVE = sa.text("status <> 'cancelled'")
OPEN = sa.text("acctstoptime IS NULL")
SHOWN_DUPLICATES = 50

_DUPLICATES = sa.text("""
SELECT lower(s.pppoe_username) AS login, s.pppoe_username AS typed, s.id AS subscription_id,
       c.account_number AS account_number
FROM subscriptions s JOIN customers c ON c.id = s.customer_id
WHERE s.status <> 'cancelled' AND lower(s.pppoe_username) IN (
    SELECT lower(pppoe_username) FROM subscriptions
    WHERE status <> 'cancelled' AND pppoe_username IS NOT NULL
    GROUP BY lower(pppoe_username) HAVING count(*) > 1)
ORDER BY lower(s.pppoe_username), s.id""")


def _refuse_case_duplicates() -> None:
    rows = op.get_bind().execute(_DUPLICATES).all()
    if not rows:
        return
    groups: dict[str, list[str]] = {}
    for row in rows:
        groups.setdefault(row.login, []).append(
            f"{row.typed!r} (subscription {row.subscription_id}, customer {row.account_number})")
    lines = [f"  {', '.join(items)}" for items in list(groups.values())[:SHOWN_DUPLICATES]]
    if len(groups) > SHOWN_DUPLICATES:
        lines.append(f"  … and {len(groups) - SHOWN_DUPLICATES} more (the subscription list's search finds each)")
    raise RuntimeError(
        f"0011_pppoe_case: {len(groups)} PPPoE login(s) are held by several live subscriptions that differ only in "
        "case. From this release a login is the same login whatever its case, so only one of each may stay. "
        "Rename the others (the subscription's Network form, on the release you run now), set the new login on "
        "those customers' routers, then run `flask db upgrade` again. Nothing was changed.\n" + "\n".join(lines))


def _indexes(expression) -> None:
    """The login lookups: on `expression(column)` (the column itself, or its lower case)."""
    op.create_index('uq_subscriptions_pppoe_live', 'subscriptions', [expression('pppoe_username')], unique=True,
                    postgresql_where=LIVE, sqlite_where=LIVE)
    op.create_index('ix_radacct_open_username', 'radacct', [expression('username')],
                    postgresql_where=OPEN, sqlite_where=OPEN)
    op.create_index('ix_radacct_username_start', 'radacct', [expression('username'), 'acctstarttime'])
    op.create_index('radpostauth_username_idx', 'radpostauth', [expression('username'), 'authdate'])


def _drop_indexes() -> None:
    op.drop_index('uq_subscriptions_pppoe_live', table_name='subscriptions')
    op.drop_index('ix_radacct_open_username', table_name='radacct')
    op.drop_index('ix_radacct_username_start', table_name='radacct')
    op.drop_index('radpostauth_username_idx', table_name='radpostauth')


def upgrade():
    _refuse_case_duplicates()
    _drop_indexes()
    _indexes(lambda column: sa.text(f"lower({column})"))


def downgrade():
    # Lower-case-unique logins are unique as typed too, so the old index always builds.
    _drop_indexes()
    _indexes(lambda column: column)

"""change versions: a per-table data version bumped by PostgreSQL in every transaction that writes the table

Revision ID: 0004_change_versions
Revises: 0003_idempotency
Create Date: 2026-11-26 09:10:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0004_change_versions'
down_revision = '0003_idempotency'
branch_labels = None
depends_on = None

TRACKED = ("customers", "subscriptions", "plans")

# A deferred constraint trigger fires at COMMIT, once per changed row; the transaction-local setting makes only the
# first call bump, so a 100,000-row load costs one UPDATE. Bumping at commit (not at the statement) holds the
# version row's lock only for the commit itself: writers of one table never wait on each other's open transactions,
# and no deadlock can form around it. The bump is part of the writing transaction, so a reader never sees new rows
# with an old version in one snapshot, nor an old version after the rows commit.
BUMP = """
CREATE FUNCTION bump_change_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('isp_admin.bumped_' || TG_TABLE_NAME, true) IS DISTINCT FROM '1' THEN
        UPDATE change_versions SET version = version + 1 WHERE name = TG_TABLE_NAME;
        PERFORM set_config('isp_admin.bumped_' || TG_TABLE_NAME, '1', true);
    END IF;
    RETURN NULL;
END
$$;
"""
# TRUNCATE has no rows to fire for; it bumps at once (it takes an exclusive lock on the table anyway).
BUMP_NOW = """
CREATE FUNCTION bump_change_version_now() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE change_versions SET version = version + 1 WHERE name = TG_TABLE_NAME;
    RETURN NULL;
END
$$;
"""


def upgrade():
    op.create_table('change_versions',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_change_versions'))
    )
    op.bulk_insert(sa.table('change_versions', sa.column('name'), sa.column('version')),
                   [{'name': name, 'version': 0} for name in TRACKED])
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite (the embedded demo database) lists the plain way, without versioned caches
    op.execute(BUMP)
    op.execute(BUMP_NOW)
    for table in TRACKED:
        op.execute(f"CREATE CONSTRAINT TRIGGER {table}_change_version AFTER INSERT OR UPDATE OR DELETE ON {table} "
                   f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION bump_change_version()")
        op.execute(f"CREATE TRIGGER {table}_change_version_truncate AFTER TRUNCATE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION bump_change_version_now()")


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        for table in TRACKED:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_change_version ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_change_version_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS bump_change_version()")
        op.execute("DROP FUNCTION IF EXISTS bump_change_version_now()")
    op.drop_table('change_versions')

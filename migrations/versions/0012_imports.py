"""CSV imports kept between preview and apply (issue 16)

An uploaded CSV file (customers with subscriptions, or payments from a bank statement) is stored with its SHA-256
so that apply runs exactly the bytes the preview checked; a partial unique index lets one file be applied once,
unless a second apply names the first (repeat_of), which staff confirm.

Revision ID: 0012_imports
Revises: 0011_pppoe_case
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012_imports'
down_revision = '0011_pppoe_case'
branch_labels = None
depends_on = None

FIRST_APPLY = "status = 'applied' AND repeat_of IS NULL"


def upgrade():
    op.create_table(
        'imports',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('filename', sa.String(length=255), nullable=False),
        sa.Column('content', sa.LargeBinary(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('size_bytes', sa.Integer(), nullable=False),
        sa.Column('row_count', sa.Integer(), nullable=False),
        sa.Column('error_count', sa.Integer(), nullable=False),
        sa.Column('date_format', sa.String(length=8), nullable=False),
        sa.Column('decimal_comma', sa.Boolean(), nullable=False),
        sa.Column('skip_debits', sa.Boolean(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('report', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=254), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('applied_by', sa.String(length=254), nullable=True),
        sa.Column('applied_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('repeat_of', sa.Integer(), nullable=True),
        sa.CheckConstraint("kind IN ('customers', 'payments')", name=op.f('ck_imports_kind')),
        sa.CheckConstraint("status IN ('previewed', 'applied')", name=op.f('ck_imports_status')),
        sa.CheckConstraint("date_format IN ('iso', 'dmy', 'mdy')", name=op.f('ck_imports_date_format')),
        sa.CheckConstraint("(status = 'applied') = (applied_at IS NOT NULL)",
                           name=op.f('ck_imports_applied_at_iff_applied')),
        sa.ForeignKeyConstraint(['repeat_of'], ['imports.id'], name=op.f('fk_imports_repeat_of_imports'),
                                ondelete='RESTRICT'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_imports')),
    )
    with op.batch_alter_table('imports', schema=None) as batch_op:
        batch_op.create_index('ix_imports_sha256', ['sha256'], unique=False)
        batch_op.create_index('uq_imports_applied_sha256', ['kind', 'sha256'], unique=True,
                              postgresql_where=sa.text(FIRST_APPLY), sqlite_where=sa.text(FIRST_APPLY))


def downgrade():
    with op.batch_alter_table('imports', schema=None) as batch_op:
        batch_op.drop_index('uq_imports_applied_sha256', postgresql_where=sa.text(FIRST_APPLY),
                            sqlite_where=sa.text(FIRST_APPLY))
        batch_op.drop_index('ix_imports_sha256')
    op.drop_table('imports')

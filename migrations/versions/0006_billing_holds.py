"""billing holds: a subscription whose catch-up is too long is held for review, not billed silently

Revision ID: 0006_billing_holds
Revises: 0005_money_integrity
Create Date: 2026-12-04 18:35:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0006_billing_holds'
down_revision = '0005_money_integrity'
branch_labels = None
depends_on = None


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        # Fire the data-version triggers earlier migrations' updates left pending (ALTER TABLE refuses to run with
        # deferred trigger events outstanding on the table, and every migration runs in one transaction).
        op.execute("SET CONSTRAINTS ALL IMMEDIATE")
    # Plain ADD COLUMN (no batch copy): SQLite can add these in place, and a copy of subscriptions would trip the
    # foreign keys that point at it.
    op.add_column('subscriptions', sa.Column('billing_hold_reason', sa.String(length=255), nullable=True))
    op.add_column('subscriptions', sa.Column('billing_held_on', sa.Date(), nullable=True))
    op.add_column('subscriptions', sa.Column('catch_up_approved', sa.Boolean(), server_default=sa.text('false'),
                                             nullable=False))


def downgrade():
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_column('catch_up_approved')
        batch_op.drop_column('billing_held_on')
        batch_op.drop_column('billing_hold_reason')

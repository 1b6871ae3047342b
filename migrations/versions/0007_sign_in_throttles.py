"""sign-in throttles: failed sign-ins per (typed email, client address) with growing waits, instead of a lockout

Revision ID: 0007_sign_in_throttles
Revises: 0006_billing_holds
Create Date: 2026-12-05 10:00:00

"""
from alembic import op
import sqlalchemy as sa



revision = '0007_sign_in_throttles'
down_revision = '0006_billing_holds'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('sign_in_throttles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=254), nullable=False),
    sa.Column('client_address', sa.String(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('blocked_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_failure_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint('failures >= 0', name=op.f('ck_sign_in_throttles_failures_non_negative')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sign_in_throttles')),
    sa.UniqueConstraint('email', 'client_address', name='uq_sign_in_throttles_email_client')
    )
    with op.batch_alter_table('sign_in_throttles', schema=None) as batch_op:
        batch_op.create_index('ix_sign_in_throttles_last_failure', ['last_failure_at'], unique=False)


def downgrade():
    with op.batch_alter_table('sign_in_throttles', schema=None) as batch_op:
        batch_op.drop_index('ix_sign_in_throttles_last_failure')
    op.drop_table('sign_in_throttles')

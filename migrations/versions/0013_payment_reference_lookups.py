"""payment reference lookups: the global search finds payments by bank reference (whole or by its beginning) and
by the provider's reference, each through an index

Revision ID: 0013_payment_reference_lookups
Revises: 0012_imports
"""
from __future__ import annotations

from alembic import op

revision = '0013_payment_reference_lookups'
down_revision = '0012_imports'
branch_labels = None
depends_on = None


def upgrade():
    # A plain b-tree: the search asks for a reference whole, or by its beginning as a range (lookups.starts_with).
    op.create_index("ix_payments_reference", "payments", ["reference"])
    op.create_index("ix_payments_provider_ref", "payments", ["provider_ref"])


def downgrade():
    op.drop_index("ix_payments_provider_ref", table_name="payments")
    op.drop_index("ix_payments_reference", table_name="payments")

"""customer actor and lookups: audit events may name a customer; indexes for sign-in by email and refund lookups

A customer's portal writes are audited as actor_type 'customer' with their id. Portal sign-in finds customers by
email, and a refund made in a provider's dashboard finds its payment by (provider, reference).

Revision ID: 0010_customer_actor_lookups
Revises: 0009_payments_portal
Create Date: 2026-12-05 21:40:00

"""
from alembic import op


revision = '0010_customer_actor_lookups'
down_revision = '0009_payments_portal'
branch_labels = None
depends_on = None

OLD_ACTORS = "actor_type IN ('user', 'token', 'system')"
NEW_ACTORS = "actor_type IN ('user', 'token', 'system', 'customer')"


def _actor_check(condition: str) -> None:
    # SQLite cannot alter a CHECK: batch mode copies the table with the new one (named checks are carried over).
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_audit_events_actor_type'), type_='check')
        batch_op.create_check_constraint(op.f('ck_audit_events_actor_type'), condition)


def upgrade():
    _actor_check(NEW_ACTORS)
    # customers_for() compares the lower-cased email as typed with plain equality (the column is held lower-case
    # by ck_customers_email_lowercase), so a plain index on the column is the one the planner can use.
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.create_index('ix_customers_email', ['email'], unique=False)
    # events.find_attempt: a refund made in the provider's dashboard names the payment by (provider, reference).
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.create_index('ix_payments_provider_reference', ['provider', 'reference'], unique=False)


def downgrade():
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index('ix_payments_provider_reference')
    with op.batch_alter_table('customers', schema=None) as batch_op:
        batch_op.drop_index('ix_customers_email')
    # Before 0010 a customer's portal writes were the system's, labelled portal:<account number> as they still are.
    op.execute("UPDATE audit_events SET actor_type = 'system', actor_id = NULL WHERE actor_type = 'customer'")
    _actor_check(OLD_ACTORS)

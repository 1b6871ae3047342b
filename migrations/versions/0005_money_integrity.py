"""money integrity: suspension periods, billed_from, one credit per cancel/plan change, issued invoices immutable

Revision ID: 0005_money_integrity
Revises: 0004_change_versions
Create Date: 2026-12-04 17:50:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0005_money_integrity'
down_revision = '0004_change_versions'
branch_labels = None
depends_on = None

# An issued invoice is never edited (DESIGN §2): its amounts, number, customer and dates stay as issued, it never
# returns to draft, and it is never deleted. Only status, payments/credit applied, paid/void/sent stamps move.
# ERRCODE 23000 (integrity_constraint_violation) reaches the app as an IntegrityError: a 409, never a 500.
PG_INVOICE_GUARD = """
CREATE FUNCTION guard_issued_invoice() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'issued invoice % is never deleted', OLD.number USING ERRCODE = '23000';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status <> 'draft' AND (NEW.status = 'draft' OR NEW.number IS DISTINCT FROM OLD.number
            OR NEW.customer_id <> OLD.customer_id OR NEW.subtotal_cents <> OLD.subtotal_cents
            OR NEW.tax_cents <> OLD.tax_cents OR NEW.total_cents <> OLD.total_cents
            OR NEW.issue_date <> OLD.issue_date OR NEW.due_date <> OLD.due_date
            OR NEW.currency <> OLD.currency) THEN
        RAISE EXCEPTION 'issued invoice % is never edited', OLD.number USING ERRCODE = '23000';
    END IF;
    RETURN NEW;
END
$$;
"""
# Lines: statement-level, so a billing chunk's one INSERT of thousands of lines costs one join, not a probe per row.
# An issued invoice gets its lines in the statement that writes its first ones (the billing run inserts the invoice
# as issued, then all its lines at once); after that, no line of it is added, changed or removed.
PG_LINE_GUARDS = """
CREATE FUNCTION guard_issued_lines_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM (SELECT invoice_id, count(*) AS added FROM inserted_lines GROUP BY invoice_id) n
               JOIN invoices i ON i.id = n.invoice_id AND i.status <> 'draft'
               WHERE (SELECT count(*) FROM invoice_lines l WHERE l.invoice_id = n.invoice_id) <> n.added) THEN
        RAISE EXCEPTION 'an issued invoice''s lines are never changed' USING ERRCODE = '23000';
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION guard_issued_lines_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM old_lines o JOIN invoices i ON i.id = o.invoice_id WHERE i.status <> 'draft') THEN
        RAISE EXCEPTION 'an issued invoice''s lines are never changed' USING ERRCODE = '23000';
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER invoice_lines_insert_guard AFTER INSERT ON invoice_lines
    REFERENCING NEW TABLE AS inserted_lines FOR EACH STATEMENT EXECUTE FUNCTION guard_issued_lines_insert();
CREATE TRIGGER invoice_lines_update_guard AFTER UPDATE ON invoice_lines
    REFERENCING OLD TABLE AS old_lines FOR EACH STATEMENT EXECUTE FUNCTION guard_issued_lines_change();
CREATE TRIGGER invoice_lines_delete_guard AFTER DELETE ON invoice_lines
    REFERENCING OLD TABLE AS old_lines FOR EACH STATEMENT EXECUTE FUNCTION guard_issued_lines_change();
CREATE TRIGGER invoices_issued_guard BEFORE UPDATE OR DELETE ON invoices
    FOR EACH ROW EXECUTE FUNCTION guard_issued_invoice();
"""
# The ledger identity, checked by the database at COMMIT (deferred, so the order of one transaction's writes does
# not matter): an invoice's stored amount paid and credit applied equal its active allocations (payments completed),
# and no payment or credit note is allocated beyond its amount. A write that would break it fails as a whole.
PG_LEDGER_GUARDS = """
CREATE FUNCTION assert_invoice_applied(target integer) RETURNS void LANGUAGE plpgsql AS $$
DECLARE stored_paid bigint; stored_credit bigint; paid bigint; credit bigint;
BEGIN
    SELECT amount_paid_cents, credit_applied_cents INTO stored_paid, stored_credit FROM invoices WHERE id = target;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT coalesce(sum(a.amount_cents), 0) INTO paid FROM payment_allocations a
        JOIN payments p ON p.id = a.payment_id
        WHERE a.invoice_id = target AND a.reversed_at IS NULL AND p.status = 'completed';
    SELECT coalesce(sum(amount_cents), 0) INTO credit FROM credit_allocations
        WHERE invoice_id = target AND reversed_at IS NULL;
    IF paid <> stored_paid OR credit <> stored_credit THEN
        RAISE EXCEPTION 'invoice % says paid % and credit %, its allocations say % and %',
            target, stored_paid, stored_credit, paid, credit USING ERRCODE = '23000';
    END IF;
END
$$;
CREATE FUNCTION check_payment_allocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM assert_invoice_applied(NEW.invoice_id);
    IF (SELECT coalesce(sum(amount_cents), 0) FROM payment_allocations
        WHERE payment_id = NEW.payment_id AND reversed_at IS NULL)
       > (SELECT amount_cents FROM payments WHERE id = NEW.payment_id) THEN
        RAISE EXCEPTION 'payment % is allocated beyond its amount', NEW.payment_id USING ERRCODE = '23000';
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION check_credit_allocation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM assert_invoice_applied(NEW.invoice_id);
    IF (SELECT coalesce(sum(amount_cents), 0) FROM credit_allocations
        WHERE credit_note_id = NEW.credit_note_id AND reversed_at IS NULL)
       > (SELECT amount_cents FROM credit_notes WHERE id = NEW.credit_note_id) THEN
        RAISE EXCEPTION 'credit note % is applied beyond its amount', NEW.credit_note_id USING ERRCODE = '23000';
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION check_invoice_applied() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM assert_invoice_applied(NEW.id);
    RETURN NULL;
END
$$;
CREATE FUNCTION check_payment_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM assert_invoice_applied(a.invoice_id) FROM payment_allocations a WHERE a.payment_id = NEW.id;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER payment_allocations_ledger AFTER INSERT OR UPDATE ON payment_allocations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION check_payment_allocation();
CREATE CONSTRAINT TRIGGER credit_allocations_ledger AFTER INSERT OR UPDATE ON credit_allocations
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION check_credit_allocation();
CREATE CONSTRAINT TRIGGER invoices_ledger AFTER UPDATE OF amount_paid_cents, credit_applied_cents ON invoices
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION check_invoice_applied();
CREATE CONSTRAINT TRIGGER payments_ledger AFTER UPDATE OF status ON payments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION check_payment_status();
"""
# SQLite (the embedded demo database): the same rules for updates and deletes, row by row.
SQLITE_GUARDS = [
    """CREATE TRIGGER invoices_issued_update_guard BEFORE UPDATE ON invoices
       WHEN OLD.status <> 'draft' AND (NEW.status = 'draft' OR NEW.number IS NOT OLD.number
            OR NEW.customer_id <> OLD.customer_id OR NEW.subtotal_cents <> OLD.subtotal_cents
            OR NEW.tax_cents <> OLD.tax_cents OR NEW.total_cents <> OLD.total_cents
            OR NEW.issue_date <> OLD.issue_date OR NEW.due_date <> OLD.due_date OR NEW.currency <> OLD.currency)
       BEGIN SELECT RAISE(ABORT, 'issued invoices are never edited'); END""",
    """CREATE TRIGGER invoices_issued_delete_guard BEFORE DELETE ON invoices WHEN OLD.status <> 'draft'
       BEGIN SELECT RAISE(ABORT, 'issued invoices are never deleted'); END""",
    """CREATE TRIGGER invoice_lines_update_guard BEFORE UPDATE ON invoice_lines
       WHEN (SELECT status FROM invoices WHERE id = OLD.invoice_id) <> 'draft'
       BEGIN SELECT RAISE(ABORT, 'an issued invoice''s lines are never changed'); END""",
    """CREATE TRIGGER invoice_lines_delete_guard BEFORE DELETE ON invoice_lines
       WHEN (SELECT status FROM invoices WHERE id = OLD.invoice_id) <> 'draft'
       BEGIN SELECT RAISE(ABORT, 'an issued invoice''s lines are never changed'); END""",
]

# Credits issued twice for one cancellation or plan change (the race this release closes) already gave the money;
# the later copies become 'manual' credits that say what they are, for someone to review, so the unique indexes can
# be built and reconcile's per-event check applies to the first one only.
RELABEL_DUPLICATE_CREDITS = """
UPDATE credit_notes AS dup SET kind = 'manual',
    reason = 'Duplicate of credit note ' || first.number || ' (one event credited twice before release 0005; review): '
             || dup.reason
FROM credit_notes AS first
WHERE dup.kind IN ('cancellation', 'plan_change') AND first.kind = dup.kind
  AND first.subscription_id = dup.subscription_id AND first.id < dup.id
  AND (dup.kind = 'cancellation' OR first.issue_date = dup.issue_date)
  AND NOT EXISTS (SELECT 1 FROM credit_notes earlier WHERE earlier.kind = dup.kind
                  AND earlier.subscription_id = dup.subscription_id AND earlier.id < first.id
                  AND (dup.kind = 'cancellation' OR earlier.issue_date = dup.issue_date))
"""


def upgrade():
    bind = op.get_bind()
    op.create_table('suspension_periods',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('started_on', sa.Date(), nullable=False),
    sa.Column('ended_on', sa.Date(), nullable=True),
    sa.CheckConstraint("ended_on IS NULL OR ended_on >= started_on", name=op.f('ck_suspension_periods_ends_after_start')),
    sa.CheckConstraint("reason IN ('non_payment', 'manual', 'vacation')", name=op.f('ck_suspension_periods_reason')),
    sa.ForeignKeyConstraint(['customer_id'], ['customers.id'], name=op.f('fk_suspension_periods_customer_id_customers'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'], name=op.f('fk_suspension_periods_subscription_id_subscriptions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_suspension_periods'))
    )
    with op.batch_alter_table('suspension_periods', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_suspension_periods_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index('ix_suspension_periods_subscription', ['subscription_id', 'started_on'], unique=False)
        batch_op.create_index('uq_suspension_periods_open', ['subscription_id'], unique=True,
                              postgresql_where=sa.text('ended_on IS NULL'), sqlite_where=sa.text('ended_on IS NULL'))
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('billed_from', sa.Date(), nullable=True))

    # Subscriptions suspended before this release: the day of their last change is the best record of when.
    op.execute("INSERT INTO suspension_periods (subscription_id, customer_id, reason, started_on) "
               "SELECT id, customer_id, suspension_reason, CAST(updated_at AS DATE) FROM subscriptions "
               "WHERE status = 'suspended'")
    # Coverage starts at the first period billed here when that is after the start date (imported history).
    op.execute("UPDATE subscriptions SET billed_from = (SELECT min(l.period_start) FROM invoice_lines l "
               "WHERE l.subscription_id = subscriptions.id AND l.kind = 'subscription') "
               "WHERE (SELECT min(l.period_start) FROM invoice_lines l WHERE l.subscription_id = subscriptions.id "
               "AND l.kind = 'subscription') > start_date")
    op.execute("UPDATE subscriptions SET billed_from = next_bill_date WHERE billed_from IS NULL "
               "AND next_bill_date > start_date AND NOT EXISTS (SELECT 1 FROM invoice_lines l "
               "WHERE l.subscription_id = subscriptions.id AND l.kind = 'subscription')")

    relabelled = bind.execute(sa.text(RELABEL_DUPLICATE_CREDITS)).rowcount
    if relabelled:
        print(f"0005: {relabelled} credit note(s) issued twice for one event are now 'manual' credits marked "
              "'Duplicate of credit note …'; review them.")
    with op.batch_alter_table('credit_notes', schema=None) as batch_op:
        batch_op.create_index('uq_credit_notes_cancellation', ['subscription_id'], unique=True,
                              postgresql_where=sa.text("kind = 'cancellation'"),
                              sqlite_where=sa.text("kind = 'cancellation'"))
        batch_op.create_index('uq_credit_notes_plan_change', ['subscription_id', 'issue_date'], unique=True,
                              postgresql_where=sa.text("kind = 'plan_change'"),
                              sqlite_where=sa.text("kind = 'plan_change'"))

    if bind.dialect.name == "postgresql":
        op.execute(PG_INVOICE_GUARD)
        op.execute(PG_LINE_GUARDS)
        op.execute(PG_LEDGER_GUARDS)
    else:
        for statement in SQLITE_GUARDS:
            op.execute(statement)


def downgrade():
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for trigger, table in (("payment_allocations_ledger", "payment_allocations"),
                               ("credit_allocations_ledger", "credit_allocations"),
                               ("invoices_ledger", "invoices"), ("payments_ledger", "payments"),
                               ("invoice_lines_insert_guard", "invoice_lines"),
                               ("invoice_lines_update_guard", "invoice_lines"),
                               ("invoice_lines_delete_guard", "invoice_lines"),
                               ("invoices_issued_guard", "invoices")):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
        for function in ("check_payment_allocation", "check_credit_allocation", "check_invoice_applied",
                         "check_payment_status", "guard_issued_lines_insert", "guard_issued_lines_change",
                         "guard_issued_invoice"):
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
        op.execute("DROP FUNCTION IF EXISTS assert_invoice_applied(integer)")
    else:
        for trigger in ("invoices_issued_update_guard", "invoices_issued_delete_guard",
                        "invoice_lines_update_guard", "invoice_lines_delete_guard"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    with op.batch_alter_table('credit_notes', schema=None) as batch_op:
        batch_op.drop_index('uq_credit_notes_plan_change')
        batch_op.drop_index('uq_credit_notes_cancellation')
    with op.batch_alter_table('subscriptions', schema=None) as batch_op:
        batch_op.drop_column('billed_from')
    with op.batch_alter_table('suspension_periods', schema=None) as batch_op:
        batch_op.drop_index('uq_suspension_periods_open', postgresql_where=sa.text('ended_on IS NULL'),
                            sqlite_where=sa.text('ended_on IS NULL'))
        batch_op.drop_index('ix_suspension_periods_subscription')
        batch_op.drop_index(batch_op.f('ix_suspension_periods_customer_id'))
    op.drop_table('suspension_periods')

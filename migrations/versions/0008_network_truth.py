"""network truth: FreeRADIUS reads views over subscriptions and plans; NAS list, accounting, CoA outbox

Revision ID: 0008_network
Revises: 0007_sign_in_throttles
Create Date: 2026-12-05 11:20:15.417744

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision = '0008_network'
down_revision = '0007_sign_in_throttles'
branch_labels = None
depends_on = None



# FreeRADIUS's rlm_sql reads these names with plain SELECTs (id, username/groupname, attribute, op, value).
# A login is live while its subscription is not cancelled (the partial unique index on pppoe_username holds one
# such subscription per login, and the views' WHERE matches that index, so a lookup is an index scan).
# Active: its plan's group and its static IP. Suspended: the reason's policy picks the walled garden (no static
# IP, so the pool applies) or the rejected group. Pending (not started yet): rejected. Cancelled: no rows (Reject).
VIEWS = {
    "radcheck": """
        SELECT s.id AS id, s.pppoe_username AS username, 'Cleartext-Password' AS attribute, ':=' AS op,
               c.password AS value
        FROM subscriptions s JOIN network_credentials c ON c.subscription_id = s.id
        WHERE s.status <> 'cancelled' AND s.pppoe_username IS NOT NULL""",
    "radreply": """
        SELECT s.id AS id, s.pppoe_username AS username,
               CASE WHEN s.static_ip LIKE '%:%' THEN 'Framed-IPv6-Address' ELSE 'Framed-IP-Address' END
                   AS attribute,
               ':=' AS op, s.static_ip AS value
        FROM subscriptions s
        WHERE s.status = 'active' AND s.pppoe_username IS NOT NULL AND s.static_ip IS NOT NULL""",
    "radusergroup": """
        SELECT s.id AS id, s.pppoe_username AS username,
               CASE WHEN s.status = 'active' THEN 'plan-' || p.code
                    WHEN s.status = 'suspended' AND pol.action = 'walled_garden' THEN 'walled-garden'
                    ELSE 'rejected' END AS groupname,
               1 AS priority
        FROM subscriptions s JOIN plans p ON p.id = s.plan_id
             LEFT JOIN network_policies pol ON pol.reason = s.suspension_reason
        WHERE s.status <> 'cancelled' AND s.pppoe_username IS NOT NULL""",
    "radgroupcheck": """
        SELECT a.id AS id, 'plan-' || p.code AS groupname, a.attribute AS attribute, a.op AS op, a.value AS value
        FROM plan_radius_attributes a JOIN plans p ON p.id = a.plan_id WHERE a.kind = 'check'
        UNION ALL
        SELECT g.id, g.groupname, g.attribute, g.op, g.value FROM radius_group_attributes g WHERE g.kind = 'check'""",
    # A plan's rate is MikroTik's "rx/tx" from the router's side: the customer's upload first. A plan attribute
    # named Mikrotik-Rate-Limit replaces the derived one.
    "radgroupreply": """
        SELECT p.id AS id, 'plan-' || p.code AS groupname, 'Mikrotik-Rate-Limit' AS attribute, ':=' AS op,
               p.upload_mbps || 'M/' || p.download_mbps || 'M' AS value
        FROM plans p
        WHERE NOT EXISTS (SELECT 1 FROM plan_radius_attributes o WHERE o.plan_id = p.id AND o.kind = 'reply'
                          AND o.attribute = 'Mikrotik-Rate-Limit')
        UNION ALL
        SELECT a.id, 'plan-' || p.code, a.attribute, a.op, a.value
        FROM plan_radius_attributes a JOIN plans p ON p.id = a.plan_id WHERE a.kind = 'reply'
        UNION ALL
        SELECT g.id, g.groupname, g.attribute, g.op, g.value FROM radius_group_attributes g WHERE g.kind = 'reply'""",
}

_WATCHED = ("status", "suspension_reason", "plan_id", "pppoe_username", "static_ip")
_CHANGE_COLUMNS = ("subscription_id, old_username, new_username, old_status, new_status, old_reason, new_reason,"
                   " old_plan_id, new_plan_id, old_static_ip, new_static_ip, created_at")
_CHANGE_VALUES = ("NEW.id, OLD.pppoe_username, NEW.pppoe_username, OLD.status, NEW.status, OLD.suspension_reason,"
                  " NEW.suspension_reason, OLD.plan_id, NEW.plan_id, OLD.static_ip, NEW.static_ip")


def _seed():
    policies = sa.table("network_policies", sa.column("reason"), sa.column("action"))
    op.bulk_insert(policies, [{"reason": "non_payment", "action": "walled_garden"},
                              {"reason": "manual", "action": "reject"},
                              {"reason": "vacation", "action": "reject"}])
    groups = sa.table("radius_group_attributes", sa.column("groupname"), sa.column("kind"), sa.column("attribute"),
                      sa.column("op"), sa.column("value"))
    op.bulk_insert(groups, [
        dict(groupname="walled-garden", kind="reply", attribute="Framed-Pool", op=":=", value="walled-garden"),
        dict(groupname="walled-garden", kind="reply", attribute="Mikrotik-Rate-Limit", op=":=", value="256k/256k"),
        dict(groupname="walled-garden", kind="reply", attribute="Mikrotik-Address-List", op=":=", value="suspended"),
        dict(groupname="rejected", kind="check", attribute="Auth-Type", op=":=", value="Reject"),
        dict(groupname="rejected", kind="reply", attribute="Reply-Message", op=":=",
             value="Service suspended: please contact us."),
    ])


def _views():
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def _triggers():
    """Every network-relevant subscription change leaves a network_changes row in its own transaction."""
    if op.get_bind().dialect.name == "postgresql":
        unchanged = " AND ".join(f"NEW.{c} IS NOT DISTINCT FROM OLD.{c}" for c in _WATCHED)
        op.execute(f"""
CREATE FUNCTION network_change_capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF {unchanged} THEN
        RETURN NULL;
    END IF;
    INSERT INTO network_changes ({_CHANGE_COLUMNS}) VALUES ({_CHANGE_VALUES}, now());
    RETURN NULL;
END $$""")
        op.execute("CREATE TRIGGER subscriptions_network_change AFTER UPDATE ON subscriptions "
                   "FOR EACH ROW EXECUTE FUNCTION network_change_capture()")
        # FreeRADIUS's stock post-auth query stores the typed password; the column stays empty whatever it sends.
        op.execute("""
CREATE FUNCTION radpostauth_forget_password() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.pass := NULL;
    RETURN NEW;
END $$""")
        op.execute("CREATE TRIGGER radpostauth_no_password BEFORE INSERT OR UPDATE ON radpostauth "
                   "FOR EACH ROW EXECUTE FUNCTION radpostauth_forget_password()")
    else:
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in _WATCHED)
        op.execute(f"""
CREATE TRIGGER subscriptions_network_change AFTER UPDATE OF {', '.join(_WATCHED)} ON subscriptions
WHEN {changed}
BEGIN
    INSERT INTO network_changes ({_CHANGE_COLUMNS}) VALUES ({_CHANGE_VALUES}, datetime('now'));
END""")


def _drop_triggers():
    op.execute("DROP TRIGGER IF EXISTS subscriptions_network_change" +
               (" ON subscriptions" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS radpostauth_no_password ON radpostauth")
        op.execute("DROP FUNCTION IF EXISTS network_change_capture()")
        op.execute("DROP FUNCTION IF EXISTS radpostauth_forget_password()")


def upgrade():
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table('nas',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('nasname', sa.String(length=64), nullable=False),
    sa.Column('shortname', sa.String(length=32), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('ports', sa.Integer(), nullable=True),
    sa.Column('secret', sa.String(length=64), nullable=False),
    sa.Column('server', sa.String(length=64), nullable=True),
    sa.Column('community', sa.String(length=50), nullable=True),
    sa.Column('description', sa.String(length=200), nullable=True),
    sa.Column('coa_port', sa.Integer(), server_default=sa.text('3799'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("type IN ('mikrotik', 'cisco', 'juniper', 'other')", name=op.f('ck_nas_type')),
    sa.CheckConstraint('coa_port BETWEEN 1 AND 65535', name=op.f('ck_nas_coa_port_range')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_nas')),
    sa.UniqueConstraint('nasname', name='uq_nas_nasname')
    )
    op.create_table('network_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.CheckConstraint("action IN ('walled_garden', 'reject')", name=op.f('ck_network_policies_action')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_network_policies')),
    sa.UniqueConstraint('reason', name='uq_network_policies_reason')
    )
    op.create_table('radacct',
    sa.Column('radacctid', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('acctsessionid', sa.Text(), nullable=False),
    sa.Column('acctuniqueid', sa.Text(), nullable=False),
    sa.Column('username', sa.Text(), nullable=True),
    sa.Column('realm', sa.Text(), nullable=True),
    sa.Column('nasipaddress', sa.String(length=45).with_variant(postgresql.INET(), 'postgresql'), nullable=False),
    sa.Column('nasportid', sa.Text(), nullable=True),
    sa.Column('nasporttype', sa.Text(), nullable=True),
    sa.Column('acctstarttime', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acctupdatetime', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acctstoptime', sa.DateTime(timezone=True), nullable=True),
    sa.Column('acctinterval', sa.BigInteger(), nullable=True),
    sa.Column('acctsessiontime', sa.BigInteger(), nullable=True),
    sa.Column('acctauthentic', sa.Text(), nullable=True),
    sa.Column('connectinfo_start', sa.Text(), nullable=True),
    sa.Column('connectinfo_stop', sa.Text(), nullable=True),
    sa.Column('acctinputoctets', sa.BigInteger(), nullable=True),
    sa.Column('acctoutputoctets', sa.BigInteger(), nullable=True),
    sa.Column('calledstationid', sa.Text(), nullable=True),
    sa.Column('callingstationid', sa.Text(), nullable=True),
    sa.Column('acctterminatecause', sa.Text(), nullable=True),
    sa.Column('servicetype', sa.Text(), nullable=True),
    sa.Column('framedprotocol', sa.Text(), nullable=True),
    sa.Column('framedipaddress', sa.String(length=45).with_variant(postgresql.INET(), 'postgresql'), nullable=True),
    sa.Column('framedipv6address', sa.String(length=45).with_variant(postgresql.INET(), 'postgresql'), nullable=True),
    sa.Column('framedipv6prefix', sa.String(length=45).with_variant(postgresql.INET(), 'postgresql'), nullable=True),
    sa.Column('framedinterfaceid', sa.Text(), nullable=True),
    sa.Column('delegatedipv6prefix', sa.String(length=45).with_variant(postgresql.INET(), 'postgresql'), nullable=True),
    sa.Column('class', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('radacctid', name=op.f('pk_radacct')),
    sa.UniqueConstraint('acctuniqueid', name=op.f('uq_radacct_acctuniqueid'))
    )
    with op.batch_alter_table('radacct', schema=None) as batch_op:
        batch_op.create_index('ix_radacct_open_framed_ip', ['framedipaddress'], unique=False, postgresql_where=sa.text('acctstoptime IS NULL'), sqlite_where=sa.text('acctstoptime IS NULL'))
        batch_op.create_index('ix_radacct_open_username', ['username'], unique=False, postgresql_where=sa.text('acctstoptime IS NULL'), sqlite_where=sa.text('acctstoptime IS NULL'))
        batch_op.create_index('ix_radacct_username_start', ['username', 'acctstarttime'], unique=False)
        batch_op.create_index('radacct_active_session_idx', ['acctuniqueid'], unique=False, postgresql_where=sa.text('acctstoptime IS NULL'), sqlite_where=sa.text('acctstoptime IS NULL'))
        batch_op.create_index('radacct_bulk_close', ['nasipaddress', 'acctstarttime'], unique=False, postgresql_where=sa.text('acctstoptime IS NULL'), sqlite_where=sa.text('acctstoptime IS NULL'))
        batch_op.create_index('radacct_start_user_idx', ['acctstarttime', 'username'], unique=False)

    op.create_table('radius_group_attributes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('groupname', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('attribute', sa.String(length=64), nullable=False),
    sa.Column('op', sa.String(length=2), nullable=False),
    sa.Column('value', sa.String(length=253), nullable=False),
    sa.CheckConstraint("groupname IN ('walled-garden', 'rejected')", name=op.f('ck_radius_group_attributes_groupname')),
    sa.CheckConstraint("kind IN ('check', 'reply')", name=op.f('ck_radius_group_attributes_kind')),
    sa.CheckConstraint("op IN (':=', '=', '==', '+=', '!=', '>', '>=', '<', '<=', '=~', '!~')", name=op.f('ck_radius_group_attributes_op')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_radius_group_attributes')),
    sa.UniqueConstraint('groupname', 'kind', 'attribute', name='uq_radius_group_attributes_group_attribute')
    )
    op.create_table('radpostauth',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('username', sa.Text(), nullable=False),
    sa.Column('pass', sa.Text(), nullable=True),
    sa.Column('reply', sa.Text(), nullable=True),
    sa.Column('calledstationid', sa.Text(), nullable=True),
    sa.Column('callingstationid', sa.Text(), nullable=True),
    sa.Column('authdate', sa.DateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.Column('class', sa.Text(), nullable=True),
    sa.CheckConstraint('pass IS NULL', name=op.f('ck_radpostauth_no_password')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_radpostauth'))
    )
    with op.batch_alter_table('radpostauth', schema=None) as batch_op:
        batch_op.create_index('radpostauth_username_idx', ['username', 'authdate'], unique=False)

    op.create_table('plan_radius_attributes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('plan_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('attribute', sa.String(length=64), nullable=False),
    sa.Column('op', sa.String(length=2), nullable=False),
    sa.Column('value', sa.String(length=253), nullable=False),
    sa.CheckConstraint("kind IN ('check', 'reply')", name=op.f('ck_plan_radius_attributes_kind')),
    sa.CheckConstraint("op IN (':=', '=', '==', '+=', '!=', '>', '>=', '<', '<=', '=~', '!~')", name=op.f('ck_plan_radius_attributes_op')),
    sa.ForeignKeyConstraint(['plan_id'], ['plans.id'], name=op.f('fk_plan_radius_attributes_plan_id_plans'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_plan_radius_attributes')),
    sa.UniqueConstraint('plan_id', 'kind', 'attribute', name='uq_plan_radius_attributes_plan_attribute')
    )
    op.create_table('network_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('old_username', sa.String(length=64), nullable=True),
    sa.Column('new_username', sa.String(length=64), nullable=True),
    sa.Column('old_status', sa.String(length=16), nullable=True),
    sa.Column('new_status', sa.String(length=16), nullable=False),
    sa.Column('old_reason', sa.String(length=16), nullable=True),
    sa.Column('new_reason', sa.String(length=16), nullable=True),
    sa.Column('old_plan_id', sa.Integer(), nullable=True),
    sa.Column('new_plan_id', sa.Integer(), nullable=False),
    sa.Column('old_static_ip', sa.String(length=45), nullable=True),
    sa.Column('new_static_ip', sa.String(length=45), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('processed_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'], name=op.f('fk_network_changes_subscription_id_subscriptions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_network_changes'))
    )
    with op.batch_alter_table('network_changes', schema=None) as batch_op:
        batch_op.create_index('ix_network_changes_pending', ['id'], unique=False, postgresql_where=sa.text('processed_at IS NULL'), sqlite_where=sa.text('processed_at IS NULL'))
        batch_op.create_index('ix_network_changes_subscription', ['subscription_id', 'id'], unique=False)

    op.create_table('network_credentials',
    sa.Column('subscription_id', sa.Integer(), nullable=False),
    sa.Column('password', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'], name=op.f('fk_network_credentials_subscription_id_subscriptions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('subscription_id', name=op.f('pk_network_credentials'))
    )
    op.create_table('coa_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('change_id', sa.Integer(), nullable=True),
    sa.Column('subscription_id', sa.Integer(), nullable=True),
    sa.Column('nas_id', sa.Integer(), nullable=True),
    sa.Column('nas_address', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=True),
    sa.Column('acct_session_id', sa.String(length=64), nullable=True),
    sa.Column('acct_unique_id', sa.String(length=64), nullable=True),
    sa.Column('framed_ip', sa.String(length=45), nullable=True),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('attributes', sa.Text(), nullable=True),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('response', sa.String(length=32), nullable=True),
    sa.Column('requested_by', sa.String(length=254), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('completed_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("kind IN ('disconnect', 'coa')", name=op.f('ck_coa_requests_kind')),
    sa.CheckConstraint("status IN ('pending', 'acked', 'failed')", name=op.f('ck_coa_requests_status')),
    sa.CheckConstraint('attempts >= 0', name=op.f('ck_coa_requests_attempts_non_negative')),
    sa.ForeignKeyConstraint(['change_id'], ['network_changes.id'], name=op.f('fk_coa_requests_change_id_network_changes'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['nas_id'], ['nas.id'], name=op.f('fk_coa_requests_nas_id_nas'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['subscription_id'], ['subscriptions.id'], name=op.f('fk_coa_requests_subscription_id_subscriptions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_coa_requests')),
    sa.UniqueConstraint('change_id', 'acct_unique_id', 'kind', name='uq_coa_requests_change_session_kind')
    )
    with op.batch_alter_table('coa_requests', schema=None) as batch_op:
        batch_op.create_index('ix_coa_requests_due', ['next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
        batch_op.create_index('ix_coa_requests_status', ['status', 'id'], unique=False)
        batch_op.create_index('ix_coa_requests_subscription', ['subscription_id', 'id'], unique=False)

    # ### end Alembic commands ###
    _seed()
    _views()
    _triggers()


def downgrade():
    # ### commands auto generated by Alembic - please adjust! ###
    _drop_triggers()
    for view in VIEWS:
        op.execute(f'DROP VIEW IF EXISTS {view}')
    with op.batch_alter_table('coa_requests', schema=None) as batch_op:
        batch_op.drop_index('ix_coa_requests_subscription')
        batch_op.drop_index('ix_coa_requests_status')
        batch_op.drop_index('ix_coa_requests_due', postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))

    op.drop_table('coa_requests')
    op.drop_table('network_credentials')
    with op.batch_alter_table('network_changes', schema=None) as batch_op:
        batch_op.drop_index('ix_network_changes_subscription')
        batch_op.drop_index('ix_network_changes_pending', postgresql_where=sa.text('processed_at IS NULL'), sqlite_where=sa.text('processed_at IS NULL'))

    op.drop_table('network_changes')
    op.drop_table('plan_radius_attributes')
    with op.batch_alter_table('radpostauth', schema=None) as batch_op:
        batch_op.drop_index('radpostauth_username_idx')

    op.drop_table('radpostauth')
    op.drop_table('radius_group_attributes')
    with op.batch_alter_table('radacct', schema=None) as batch_op:
        batch_op.drop_index('radacct_start_user_idx')
        batch_op.drop_index('radacct_bulk_close', postgresql_where=sa.text('acctstoptime IS NULL'), sqlite_where=sa.text('acctstoptime IS NULL'))
        batch_op.drop_index('radacct_active_session_idx', postgresql_where=sa.text('acctstoptime IS NULL'), sqlite_where=sa.text('acctstoptime IS NULL'))
        batch_op.drop_index('ix_radacct_username_start')
        batch_op.drop_index('ix_radacct_open_username', postgresql_where=sa.text('acctstoptime IS NULL'), sqlite_where=sa.text('acctstoptime IS NULL'))
        batch_op.drop_index('ix_radacct_open_framed_ip', postgresql_where=sa.text('acctstoptime IS NULL'), sqlite_where=sa.text('acctstoptime IS NULL'))

    op.drop_table('radacct')
    op.drop_table('network_policies')
    op.drop_table('nas')
    # ### end Alembic commands ###

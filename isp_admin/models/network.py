"""Network truth: what FreeRADIUS reads and writes, the NAS list, and the Change-of-Authorization outbox.

FreeRADIUS's rlm_sql reads radcheck/radreply/radusergroup/radgroupcheck/radgroupreply. Those are VIEWS over
subscriptions, plans and the tables below (migration 0008), so a committed suspension is the network's truth at
the next authentication, with nothing to keep in step. It writes radacct and radpostauth, tables in the shape of
its Debian schema. The `nas` table is its client table too (read_clients), with the CoA port added.
"""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import INET
from sqlalchemy.orm import Mapped, mapped_column

from isp_admin.extensions import db
from isp_admin.models.base import UTCDateTime, in_list, utcnow

NAS_TYPES = ("mikrotik", "cisco", "juniper", "other")
ATTRIBUTE_KINDS = ("check", "reply")
# FreeRADIUS operators a staff member may store (rlm_sql accepts these in check and reply rows).
ATTRIBUTE_OPS = (":=", "=", "==", "+=", "!=", ">", ">=", "<", "<=", "=~", "!~")
NETWORK_ACTIONS = ("walled_garden", "reject")
COA_KINDS = ("disconnect", "coa")
COA_STATUSES = ("pending", "acked", "failed")
# The fixed groups the radusergroup view sends a suspended or not-yet-active login to.
WALLED_GARDEN_GROUP = "walled-garden"
REJECTED_GROUP = "rejected"

# An IP address: inet on PostgreSQL (FreeRADIUS's schema), text elsewhere.
_Inet = String(45).with_variant(INET(), "postgresql")
_BigInt = BigInteger().with_variant(Integer(), "sqlite")


class Nas(db.Model):
    """A router (BRAS/NAS) that authenticates against us and accepts Disconnect/CoA on its CoA port."""

    __tablename__ = "nas"
    __table_args__ = (
        CheckConstraint(in_list("type", NAS_TYPES), name="type"),
        CheckConstraint("coa_port BETWEEN 1 AND 65535", name="coa_port_range"),
        UniqueConstraint("nasname", name="uq_nas_nasname"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    nasname: Mapped[str] = mapped_column(String(64))  # its IP address: FreeRADIUS's client address
    shortname: Mapped[str] = mapped_column(String(32))
    type: Mapped[str] = mapped_column(String(16), default="mikrotik")
    ports: Mapped[int | None]
    secret: Mapped[str] = mapped_column(String(64))
    server: Mapped[str | None] = mapped_column(String(64))
    community: Mapped[str | None] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(String(200))
    coa_port: Mapped[int] = mapped_column(default=3799, server_default=text("3799"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class NetworkCredential(db.Model):
    """A subscription's PPPoE password, kept apart from the subscription so no audit snapshot or API shape holds it.

    Stored as the Cleartext-Password FreeRADIUS needs for PAP, CHAP and MS-CHAPv2 alike (CHAP cannot work from a
    hash). Staff see it once, when it is set or regenerated.
    """

    __tablename__ = "network_credentials"

    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"),
                                                 primary_key=True)
    password: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    rotated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PlanAttribute(db.Model):
    """An extra RADIUS attribute on a plan's group, for vendors other than MikroTik (or to override its rate)."""

    __tablename__ = "plan_radius_attributes"
    __table_args__ = (
        CheckConstraint(in_list("kind", ATTRIBUTE_KINDS), name="kind"),
        CheckConstraint(in_list("op", ATTRIBUTE_OPS), name="op"),
        UniqueConstraint("plan_id", "kind", "attribute", name="uq_plan_radius_attributes_plan_attribute"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8), default="reply")
    attribute: Mapped[str] = mapped_column(String(64))
    op: Mapped[str] = mapped_column(String(2), default=":=")
    value: Mapped[str] = mapped_column(String(253))


class GroupAttribute(db.Model):
    """An attribute of a fixed group: the walled garden's pool, rate and address list; the rejected group's check."""

    __tablename__ = "radius_group_attributes"
    __table_args__ = (
        CheckConstraint(in_list("kind", ATTRIBUTE_KINDS), name="kind"),
        CheckConstraint(in_list("op", ATTRIBUTE_OPS), name="op"),
        CheckConstraint(in_list("groupname", (WALLED_GARDEN_GROUP, REJECTED_GROUP)), name="groupname"),
        UniqueConstraint("groupname", "kind", "attribute", name="uq_radius_group_attributes_group_attribute"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    groupname: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(8), default="reply")
    attribute: Mapped[str] = mapped_column(String(64))
    op: Mapped[str] = mapped_column(String(2), default=":=")
    value: Mapped[str] = mapped_column(String(253))


class SuspensionPolicy(db.Model):
    """What a suspension for a reason does on the network: the walled garden (a "please pay" page) or a reject."""

    __tablename__ = "network_policies"
    __table_args__ = (
        CheckConstraint(in_list("action", NETWORK_ACTIONS), name="action"),
        UniqueConstraint("reason", name="uq_network_policies_reason"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reason: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))


class NetworkChange(db.Model):
    """A subscription's network-relevant change, written by a database trigger in the changing transaction.

    Every path that changes status, reason, plan, login or static IP (a form, the API, the nightly run's set-based
    suspension) leaves exactly one row here, so no Disconnect/CoA can be forgotten; the dispatcher turns each into
    CoA requests for the sessions open at that moment (processed_at marks it done).
    """

    __tablename__ = "network_changes"
    __table_args__ = (
        Index("ix_network_changes_pending", "id", postgresql_where=text("processed_at IS NULL"),
              sqlite_where=text("processed_at IS NULL")),
        Index("ix_network_changes_subscription", "subscription_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("subscriptions.id", ondelete="CASCADE"))
    old_username: Mapped[str | None] = mapped_column(String(64))
    new_username: Mapped[str | None] = mapped_column(String(64))
    old_status: Mapped[str | None] = mapped_column(String(16))
    new_status: Mapped[str] = mapped_column(String(16))
    old_reason: Mapped[str | None] = mapped_column(String(16))
    new_reason: Mapped[str | None] = mapped_column(String(16))
    old_plan_id: Mapped[int | None]
    new_plan_id: Mapped[int]
    old_static_ip: Mapped[str | None] = mapped_column(String(45))
    new_static_ip: Mapped[str | None] = mapped_column(String(45))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CoaRequest(db.Model):
    """One Disconnect-Request or CoA-Request to one NAS for one session, retried until answered or given up."""

    __tablename__ = "coa_requests"
    __table_args__ = (
        CheckConstraint(in_list("kind", COA_KINDS), name="kind"),
        CheckConstraint(in_list("status", COA_STATUSES), name="status"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        # One packet of a kind per session per change: a change processed twice cannot disconnect twice.
        UniqueConstraint("change_id", "acct_unique_id", "kind", name="uq_coa_requests_change_session_kind"),
        Index("ix_coa_requests_due", "next_attempt_at", postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
        Index("ix_coa_requests_subscription", "subscription_id", "id"),
        Index("ix_coa_requests_status", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    change_id: Mapped[int | None] = mapped_column(ForeignKey("network_changes.id", ondelete="SET NULL"))
    subscription_id: Mapped[int | None] = mapped_column(ForeignKey("subscriptions.id", ondelete="SET NULL"))
    nas_id: Mapped[int | None] = mapped_column(ForeignKey("nas.id", ondelete="SET NULL"))
    nas_address: Mapped[str] = mapped_column(String(64))
    username: Mapped[str | None] = mapped_column(String(64))
    acct_session_id: Mapped[str | None] = mapped_column(String(64))
    acct_unique_id: Mapped[str | None] = mapped_column(String(64))
    framed_ip: Mapped[str | None] = mapped_column(String(45))
    kind: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str] = mapped_column(String(32))
    attributes: Mapped[str | None] = mapped_column(Text)  # JSON object of the CoA's new attributes
    status: Mapped[str] = mapped_column(String(8), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(String(32))
    requested_by: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RadAcct(db.Model):
    """An accounting session, written by FreeRADIUS (Debian's schema; gigawords are folded into the octets)."""

    __tablename__ = "radacct"
    __table_args__ = (
        Index("radacct_active_session_idx", "acctuniqueid", postgresql_where=text("acctstoptime IS NULL"),
              sqlite_where=text("acctstoptime IS NULL")),
        Index("radacct_bulk_close", "nasipaddress", "acctstarttime", postgresql_where=text("acctstoptime IS NULL"),
              sqlite_where=text("acctstoptime IS NULL")),
        Index("radacct_start_user_idx", "acctstarttime", "username"),
        # A session is its login's whatever case the router sent it in (migration 0011): looked up lower-cased.
        Index("ix_radacct_username_start", text("lower(username)"), "acctstarttime"),
        Index("ix_radacct_open_username", text("lower(username)"), postgresql_where=text("acctstoptime IS NULL"),
              sqlite_where=text("acctstoptime IS NULL")),
        Index("ix_radacct_open_framed_ip", "framedipaddress", postgresql_where=text("acctstoptime IS NULL"),
              sqlite_where=text("acctstoptime IS NULL")),
    )

    radacctid: Mapped[int] = mapped_column(_BigInt, primary_key=True, autoincrement=True)
    acctsessionid: Mapped[str] = mapped_column(Text)
    acctuniqueid: Mapped[str] = mapped_column(Text, unique=True)
    username: Mapped[str | None] = mapped_column(Text)
    realm: Mapped[str | None] = mapped_column(Text)
    nasipaddress: Mapped[str] = mapped_column(_Inet)
    nasportid: Mapped[str | None] = mapped_column(Text)
    nasporttype: Mapped[str | None] = mapped_column(Text)
    acctstarttime: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acctupdatetime: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acctstoptime: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acctinterval: Mapped[int | None] = mapped_column(BigInteger)
    acctsessiontime: Mapped[int | None] = mapped_column(BigInteger)
    acctauthentic: Mapped[str | None] = mapped_column(Text)
    connectinfo_start: Mapped[str | None] = mapped_column(Text)
    connectinfo_stop: Mapped[str | None] = mapped_column(Text)
    acctinputoctets: Mapped[int | None] = mapped_column(BigInteger)
    acctoutputoctets: Mapped[int | None] = mapped_column(BigInteger)
    calledstationid: Mapped[str | None] = mapped_column(Text)
    callingstationid: Mapped[str | None] = mapped_column(Text)
    acctterminatecause: Mapped[str | None] = mapped_column(Text)
    servicetype: Mapped[str | None] = mapped_column(Text)
    framedprotocol: Mapped[str | None] = mapped_column(Text)
    framedipaddress: Mapped[str | None] = mapped_column(_Inet)
    framedipv6address: Mapped[str | None] = mapped_column(_Inet)
    framedipv6prefix: Mapped[str | None] = mapped_column(_Inet)
    framedinterfaceid: Mapped[str | None] = mapped_column(Text)
    delegatedipv6prefix: Mapped[str | None] = mapped_column(_Inet)
    class_: Mapped[str | None] = mapped_column("class", Text)


class RadPostAuth(db.Model):
    """One authentication's outcome, written by FreeRADIUS; a trigger blanks any password it is handed."""

    __tablename__ = "radpostauth"
    __table_args__ = (
        Index("radpostauth_username_idx", text("lower(username)"), "authdate"),
        CheckConstraint("pass IS NULL", name="no_password"),
    )

    id: Mapped[int] = mapped_column(_BigInt, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(Text)
    pass_: Mapped[str | None] = mapped_column("pass", Text)
    reply: Mapped[str | None] = mapped_column(Text)
    calledstationid: Mapped[str | None] = mapped_column(Text)
    callingstationid: Mapped[str | None] = mapped_column(Text)
    authdate: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=text("CURRENT_TIMESTAMP"))
    class_: Mapped[str | None] = mapped_column("class", Text)


# What a fresh install starts with (migration 0008 writes the same rows): the reason's network action, and the
# fixed groups' attributes. Non-payment lands in the walled garden, so the customer reaches the "please pay" page.
DEFAULT_POLICIES = {"non_payment": "walled_garden", "manual": "reject", "vacation": "reject"}
DEFAULT_GROUP_ATTRIBUTES = (
    (WALLED_GARDEN_GROUP, "reply", "Framed-Pool", ":=", "walled-garden"),
    (WALLED_GARDEN_GROUP, "reply", "Mikrotik-Rate-Limit", ":=", "256k/256k"),
    (WALLED_GARDEN_GROUP, "reply", "Mikrotik-Address-List", ":=", "suspended"),
    (REJECTED_GROUP, "check", "Auth-Type", ":=", "Reject"),
    (REJECTED_GROUP, "reply", "Reply-Message", ":=", "Service suspended: please contact us."),
)

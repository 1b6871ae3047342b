"""/api/subscriptions/{id}/sessions/ and /usage/: a subscription's accounting sessions and its usage per period.

Read-only, with the read scope. Neither answer holds the PPPoE password, nor anything derived from it.
"""
from __future__ import annotations

import marshmallow as ma

from isp_admin.api.auth import api_access
from isp_admin.api.common import ListQuery, documented, page_window, pagination
from isp_admin.api.envelope import PageQuery, PaginationSchema, envelope, envelope_schema, page_links
from isp_admin.api.subscriptions.views import blp
from isp_admin.services.customers import subscriptions as subscription_service
from isp_admin.services.network import sessions as network_sessions


class SessionSchema(ma.Schema):
    """One accounting session as the router reported it; octets seen from the router (input = upload)."""

    id = ma.fields.Integer(metadata={"description": "The accounting record's id (radacctid)."})
    acct_session_id = ma.fields.String(metadata={"description": "The router's Acct-Session-Id."})
    nas_address = ma.fields.String(metadata={"description": "The router (NAS) that reported it."})
    framed_ip = ma.fields.String(allow_none=True)
    calling_station_id = ma.fields.String(allow_none=True, metadata={"description": "Usually the CPE's MAC."})
    started_at = ma.fields.AwareDateTime(allow_none=True)
    updated_at = ma.fields.AwareDateTime(allow_none=True, metadata={"description": "The last interim update."})
    stopped_at = ma.fields.AwareDateTime(allow_none=True, metadata={"description": "null while it is open."})
    open = ma.fields.Boolean(metadata={"description": "True until the router reports its stop."})
    duration_seconds = ma.fields.Integer(metadata={"description": "So far, for an open session."})
    input_octets = ma.fields.Integer(metadata={"description": "Sent by the customer (upload)."})
    output_octets = ma.fields.Integer(metadata={"description": "Received by the customer (download)."})
    terminate_cause = ma.fields.String(allow_none=True)


class SubscriptionSessionsSchema(ma.Schema):
    """Whether the subscription is online, and one page of its sessions, newest first."""

    subscription_id = ma.fields.Integer()
    pppoe_username = ma.fields.String(allow_none=True)
    online = ma.fields.Boolean(metadata={"description": "True while one of its sessions is open."})
    open_sessions = ma.fields.Integer(metadata={"description": "How many of its sessions are open."})
    sessions = ma.fields.List(ma.fields.Nested(SessionSchema), metadata={
        "description": "Sessions of its login since the subscription started (a reused login's earlier ones are "
                       "not), newest first; paged as `pagination` says."})


class UsageSchema(ma.Schema):
    """The octets of the sessions that started in one billing period, against the plan's cap."""

    period_start = ma.fields.Date()
    period_end = ma.fields.Date(metadata={"description": "Exclusive: the next period's first day."})
    sessions = ma.fields.Integer()
    input_octets = ma.fields.Integer(metadata={"description": "Upload."})
    output_octets = ma.fields.Integer(metadata={"description": "Download."})
    total_octets = ma.fields.Integer(metadata={"description": "Both directions: what a cap counts."})
    data_cap_gb = ma.fields.Integer(allow_none=True, attribute="cap_gb",
                                    metadata={"description": "The plan's cap in decimal GB; null: none."})
    cap_octets = ma.fields.Integer(allow_none=True)
    percent_of_cap = ma.fields.Float(allow_none=True, metadata={"description": "To one decimal; null: no cap."})
    over_cap = ma.fields.Boolean()


class SessionsQuery(ListQuery):
    """Page by number or cursor, as every list."""

    page_size = ma.fields.Integer(load_default=20, validate=ma.validate.Range(min=1, max=200))


SubscriptionSessions = ma.Schema.from_dict({
    "success": ma.fields.Boolean(), "message": ma.fields.String(),
    "data": ma.fields.Nested(SubscriptionSessionsSchema), "pagination": ma.fields.Nested(PaginationSchema),
    "timestamp": ma.fields.String(),
}, name="SubscriptionSessionsOne")
UsageList = envelope_schema("SubscriptionUsageList", UsageSchema, many=True)


@blp.route("/<id:subscription_id>/sessions/", methods=["GET"])
@api_access("read", "view")
@blp.arguments(SessionsQuery(), location="query", as_kwargs=False, unknown=ma.RAISE)
@blp.response(200, SubscriptionSessions)
@documented(blp, 404)
def list_sessions(args, subscription_id: int):
    """Return whether a subscription is online, and its sessions newest first (paged by number or cursor)."""
    sub = subscription_service.get_subscription(subscription_id)
    page = network_sessions.session_page(sub.id, **page_window(args))
    count = network_sessions.online_counts([sub.id]).get(sub.id, 0)
    data = {"subscription_id": sub.id, "pppoe_username": sub.pppoe_username, "online": count > 0,
            "open_sessions": count, "sessions": page.rows}
    return envelope(data, pagination=pagination(page, args))


@blp.route("/<id:subscription_id>/usage/", methods=["GET"])
@api_access("read", "view")
@blp.arguments(PageQuery, location="query", as_kwargs=True, unknown=ma.RAISE)
@blp.response(200, UsageList)
@documented(blp, 404)
def list_usage(subscription_id: int, page: int, page_size: int):
    """Return usage per billing period, the current one first, with the plan's data cap."""
    sub = subscription_service.get_subscription(subscription_id)
    periods, total = network_sessions.usage_periods(sub.id, count=page_size, skip=(page - 1) * page_size)
    return envelope(periods, pagination=page_links(page, page_size, total))

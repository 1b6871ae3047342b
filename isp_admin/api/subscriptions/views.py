"""/api/subscriptions/: list, add, read and change subscriptions (plan changes, suspensions, cancellations)."""
from __future__ import annotations

import ipaddress

import marshmallow as ma

from isp_admin.api.arguments import FullMatch
from isp_admin.api.auth import api_access, token_allows
from isp_admin.api.common import ListQuery, api_blueprint, documented, list_envelope, ordering_field, page_window
from isp_admin.api.envelope import envelope, envelope_schema
from isp_admin.api.idempotency import transactional
from isp_admin.errors import Forbidden
from isp_admin.models.subscriptions import SUBSCRIPTION_STATUSES, SUSPENSION_REASONS
from isp_admin.services.customers import subscriptions as subscription_service
from isp_admin.services.platform.clock import today

blp = api_blueprint("api_subscriptions", __name__, "/api/subscriptions",
                    "Subscriptions: a customer's service on a plan, with its network identifiers.")
ID = {"validate": ma.validate.Range(min=1, max=2**31 - 1)}


class SubscriptionSchema(ma.Schema):
    """A subscription; money in integer minor units."""

    id = ma.fields.Integer()
    customer_id = ma.fields.Integer()
    plan_id = ma.fields.Integer()
    status = ma.fields.String(metadata={"enum": list(SUBSCRIPTION_STATUSES)})
    suspension_reason = ma.fields.String(allow_none=True, metadata={"enum": list(SUSPENSION_REASONS)})
    start_date = ma.fields.Date()
    end_date = ma.fields.Date(allow_none=True)
    billing_day = ma.fields.Integer()
    next_bill_date = ma.fields.Date()
    billing_hold_reason = ma.fields.String(allow_none=True, metadata={
        "description": "Set when billing holds this subscription for review (a catch-up too long to issue)."})
    billing_held_on = ma.fields.Date(allow_none=True)
    price_override_cents = ma.fields.Integer(allow_none=True, metadata={"description": "null: the plan's price."})
    pppoe_username = ma.fields.String(allow_none=True)
    static_ip = ma.fields.String(allow_none=True)
    cpe_mac = ma.fields.String(allow_none=True)
    created_at = ma.fields.AwareDateTime()
    updated_at = ma.fields.AwareDateTime()


def _ip_address_or_empty(value: str) -> str:
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ma.ValidationError("Enter a valid IPv4 or IPv6 address.") from None
    return value


class NetworkFields(ma.Schema):
    """Network identifiers; a live subscription's PPPoE login and IP are unique ("" or null: none)."""

    # The same rules as the service's, stated in the schema so that the spec says which values are valid.
    pppoe_username = ma.fields.String(allow_none=True, validate=FullMatch(r"^[A-Za-z0-9._@-]{0,64}$"),
                                      metadata={"description": "Letters, digits and . _ @ - (at most 64)."})
    static_ip = ma.fields.String(allow_none=True, validate=[ma.validate.Length(max=45), _ip_address_or_empty],
                                 metadata={"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}, {"maxLength": 0}],
                                           "example": "192.0.2.10"})
    cpe_mac = ma.fields.String(allow_none=True, validate=FullMatch(r"^(([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2})?$"),
                               metadata={"example": "00:1A:2B:3C:4D:5E"})


class SubscriptionCreate(NetworkFields):
    """A new subscription: pending until its start date, then active and billed."""

    customer_id = ma.fields.Integer(required=True, **ID)
    plan_id = ma.fields.Integer(required=True, **ID)
    start_date = ma.fields.Date(metadata={"description": "Default: today."})
    billing_day = ma.fields.Integer(allow_none=True, validate=ma.validate.Range(min=1, max=31),
                                    metadata={"description": "Default: the start date's day."})
    price_override_cents = ma.fields.Integer(allow_none=True, validate=ma.validate.Range(min=0, max=2**31 - 1))


class SubscriptionPatch(NetworkFields):
    """Change network identifiers; left-out fields keep their values."""


class ChangePlan(ma.Schema):
    """Move to another active plan today (unused days credited, the rest of the period charged)."""

    plan_id = ma.fields.Integer(required=True, **ID)


class Suspend(ma.Schema):
    """Suspend by hand; non-payment suspensions belong to collections."""

    reason = ma.fields.String(required=True, validate=ma.validate.OneOf(("manual", "vacation")))


class Cancel(ma.Schema):
    """Cancel as of a day (default today; never in the future)."""

    end_date = ma.fields.Date(metadata={"description": "Default: today."})


class SubscriptionListQuery(ListQuery):
    """Filters of the subscription list."""

    status = ma.fields.String(validate=ma.validate.OneOf(SUBSCRIPTION_STATUSES))
    customer_id = ma.fields.Integer(**ID)
    plan_id = ma.fields.Integer(**ID)
    search = ma.fields.String(validate=ma.validate.Length(max=64),
                              metadata={"description": "Part of a PPPoE login or IP address."})
    started_from = ma.fields.Date()
    started_to = ma.fields.Date()
    ordering = ordering_field(subscription_service.SUBSCRIPTION_ORDERINGS, "-id")


SubscriptionList = envelope_schema("SubscriptionList", SubscriptionSchema, many=True)
SubscriptionOne = envelope_schema("SubscriptionOne", SubscriptionSchema)


@blp.route("/", methods=["GET"])
@api_access("read", "view")
@blp.arguments(SubscriptionListQuery(), location="query", as_kwargs=False)
@blp.response(200, SubscriptionList)
@documented(blp)
def list_subscriptions(args):
    """List subscriptions: filter by status, customer, plan, network id or start date; newest first."""
    filters = {k: args.get(k) for k in ("status", "customer_id", "plan_id", "search", "started_from", "started_to")}
    page = subscription_service.list_subscriptions(ordering=args["ordering"], **filters, **page_window(args))
    return list_envelope(page, args)


@blp.route("/", methods=["POST"])
@api_access("write", "subscriptions.edit")
@transactional
@blp.arguments(SubscriptionCreate)
@blp.response(201, SubscriptionOne)
@documented(blp, 404, 409, 415, 422)
def add_subscription(values):
    """Add a subscription for a customer on an active plan."""
    values.setdefault("start_date", today())
    sub = subscription_service.add_subscription(**values)
    return envelope(sub, "Subscription added."), 201, {"Location": f"/api/subscriptions/{sub.id}/"}


@blp.route("/<id:subscription_id>/", methods=["GET"])
@api_access("read", "view")
@blp.response(200, SubscriptionOne)
@documented(blp, 404)
def get_subscription(subscription_id: int):
    """Return one subscription."""
    return envelope(subscription_service.get_subscription(subscription_id))


@blp.route("/<id:subscription_id>/", methods=["PATCH"])
@api_access("write", "subscriptions.edit")
@transactional
@blp.arguments(SubscriptionPatch)
@blp.response(200, SubscriptionOne)
@documented(blp, 404, 409, 415, 422)
def update_network(values, subscription_id: int):
    """Change a subscription's PPPoE login, static IP or CPE MAC."""
    sub = subscription_service.get_subscription(subscription_id)
    current = {"pppoe_username": sub.pppoe_username, "static_ip": sub.static_ip, "cpe_mac": sub.cpe_mac}
    sub = subscription_service.update_network(subscription_id, **(current | values))
    return envelope(sub, "Subscription updated.")


@blp.route("/<id:subscription_id>/change-plan/", methods=["POST"])
@api_access("write", "subscriptions.edit")
@transactional
@blp.arguments(ChangePlan)
@blp.response(200, SubscriptionOne)
@documented(blp, 403, 404, 415, 422)
def change_plan(values, subscription_id: int):
    """Move a live subscription to another active plan today; a change that issues an invoice or a credit note
    also needs the billing scope (and a role that may bill), as on the subscription page."""
    outcome = subscription_service.change_plan_documents(subscription_id, values["plan_id"])
    if outcome.documents and not token_allows("billing", "billing.edit"):
        # Raised inside the transaction: the change and its documents are rolled back with it.
        issued = " and ".join("an invoice" if d.kind == "invoice" else "a credit note" for d in outcome.documents)
        raise Forbidden(f"This plan change issues {issued}: it needs a token with the billing scope whose owner "
                        "may bill.")
    return envelope(outcome.subscription, "Plan changed.")


@blp.route("/<id:subscription_id>/suspend/", methods=["POST"])
@api_access("write", "subscriptions.edit")
@transactional
@blp.arguments(Suspend)
@blp.response(200, SubscriptionOne)
@documented(blp, 404, 415, 422)
def suspend(values, subscription_id: int):
    """Suspend an active subscription (manual or vacation)."""
    return envelope(subscription_service.suspend(subscription_id, values["reason"]), "Subscription suspended.")


@blp.route("/<id:subscription_id>/resume/", methods=["POST"])
@api_access("write", "subscriptions.edit")
@transactional
@blp.response(200, SubscriptionOne)
@documented(blp, 404, 422)
def resume(subscription_id: int):
    """Resume a subscription suspended by hand."""
    return envelope(subscription_service.resume(subscription_id), "Subscription resumed.")


@blp.route("/<id:subscription_id>/approve-catch-up/", methods=["POST"])
@api_access("billing", "billing.edit")
@transactional
@blp.response(200, SubscriptionOne)
@documented(blp, 404, 422)
def approve_catch_up(subscription_id: int):
    """Approve a catch-up held for review (more than MAX_CATCH_UP_PERIODS due): the next run bills it all."""
    return envelope(subscription_service.approve_catch_up(subscription_id), "Catch-up approved.")


@blp.route("/<id:subscription_id>/cancel/", methods=["POST"])
@api_access("write", "subscriptions.edit")
@transactional
@blp.arguments(Cancel)
@blp.response(200, SubscriptionOne)
@documented(blp, 404, 415, 422)
def cancel(values, subscription_id: int):
    """Cancel a subscription, crediting unused days already billed."""
    end = values.get("end_date") or today()
    return envelope(subscription_service.cancel(subscription_id, end), "Subscription cancelled.")


from isp_admin.api.subscriptions import network  # noqa: E402, F401  (its routes are on this blueprint)

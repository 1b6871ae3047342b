"""/api/plans/: the service plans; read with a `read` token, written with a `write` token by admin or billing."""
from __future__ import annotations

import marshmallow as ma

from isp_admin.api.arguments import FullMatch, NotBlank
from isp_admin.api.auth import api_access
from isp_admin.api.common import api_blueprint, documented
from isp_admin.api.envelope import PageQuery, envelope, envelope_schema, page_links
from isp_admin.api.idempotency import transactional
from isp_admin.services.customers import plans as plan_service

blp = api_blueprint("api_plans", __name__, "/api/plans", "Service plans: speeds and prices.")


class PlanSchema(ma.Schema):
    """A service plan; money in integer minor units of `currency`."""

    id = ma.fields.Integer()
    code = ma.fields.String()
    name = ma.fields.String()
    download_mbps = ma.fields.Integer()
    upload_mbps = ma.fields.Integer()
    data_cap_gb = ma.fields.Integer(allow_none=True, metadata={"description": "null: unlimited."})
    monthly_price_cents = ma.fields.Integer()
    setup_fee_cents = ma.fields.Integer()
    tax_rate_bp = ma.fields.Integer(metadata={"description": "Basis points: 1600 is 16%."})
    currency = ma.fields.String()
    active = ma.fields.Boolean()
    created_at = ma.fields.AwareDateTime()
    updated_at = ma.fields.AwareDateTime()


class PlanWrite(ma.Schema):
    """A plan's editable fields; prices in integer minor units, tax in basis points."""

    code = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=32),
                                                     FullMatch(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")],
                            metadata={"description": "A letter or digit, then letters, digits, '-' or '_' "
                                                     "(stored upper-case)."})
    name = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=120), NotBlank()])
    download_mbps = ma.fields.Integer(required=True, validate=ma.validate.Range(min=1, max=1_000_000))
    upload_mbps = ma.fields.Integer(required=True, validate=ma.validate.Range(min=1, max=1_000_000))
    data_cap_gb = ma.fields.Integer(allow_none=True, validate=ma.validate.Range(min=1, max=10**6))
    # Prices are PostgreSQL integers: a larger amount failed in the database (500).
    monthly_price_cents = ma.fields.Integer(required=True, validate=ma.validate.Range(min=0, max=2**31 - 1))
    setup_fee_cents = ma.fields.Integer(validate=ma.validate.Range(min=0, max=2**31 - 1))
    tax_rate_bp = ma.fields.Integer(validate=ma.validate.Range(min=0, max=10000))


class PlanPatch(PlanWrite):
    """Any subset of a plan's fields, and `active` to retire it (false) or bring it back (true)."""

    active = ma.fields.Boolean()

    def __init__(self, *args, **kwargs):
        # marshmallow has no Meta.partial: without this a PATCH would demand every required field.
        kwargs.setdefault("partial", True)
        super().__init__(*args, **kwargs)


PlanList = envelope_schema("PlanList", PlanSchema, many=True)
PlanOne = envelope_schema("PlanOne", PlanSchema)


@blp.route("/", methods=["GET"])
@api_access("read", "view")
@blp.arguments(PageQuery, location="query", as_kwargs=True, unknown=ma.RAISE)
@blp.response(200, PlanList)
@documented(blp)
def list_plans(page: int, page_size: int):
    """List plans, active first, then by price."""
    plans, total = plan_service.list_plans_page(page, page_size)
    return envelope(plans, pagination=page_links(page, page_size, total))


@blp.route("/<id:plan_id>/", methods=["GET"])
@api_access("read", "view")
@blp.response(200, PlanOne)
@documented(blp, 404)
def get_plan(plan_id: int):
    """Return one plan."""
    return envelope(plan_service.get_plan(plan_id))


@blp.route("/", methods=["POST"])
@api_access("write", "plans.edit")
@transactional
@blp.arguments(PlanWrite)
@blp.response(201, PlanOne)
@documented(blp, 409, 415, 422)
def create_plan(values):
    """Create an active plan priced in the ISP's currency."""
    plan = plan_service.create_plan(**values)
    return envelope(plan, "Plan created."), 201, {"Location": f"/api/plans/{plan.id}/"}


@blp.route("/<id:plan_id>/", methods=["PATCH"])
@api_access("write", "plans.edit")
@transactional
@blp.arguments(PlanPatch)
@blp.response(200, PlanOne)
@documented(blp, 404, 409, 415, 422)
def update_plan(values, plan_id: int):
    """Edit a plan (prices apply to future bills only); `active: false` retires it."""
    active = values.pop("active", None)
    plan = plan_service.update_plan(plan_id, **values)
    if active is not None:
        plan = plan_service.set_plan_active(plan_id, active)
    return envelope(plan, "Plan updated.")


@blp.route("/<id:plan_id>/", methods=["DELETE"])
@api_access("write", "plans.edit")
@transactional
@blp.response(200, PlanOne)
@documented(blp, 404, 422)
def delete_plan(plan_id: int):
    """Delete a plan that was never used (a plan with subscriptions is retired instead)."""
    plan = plan_service.get_plan(plan_id)  # loaded before the row goes, so the answer can show it
    plan_service.delete_plan(plan_id)
    return envelope(plan, "Plan deleted.")

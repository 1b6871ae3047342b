"""GET /api/plans/ and /api/plans/{id}/: the service plans, read with a `read` token."""
from __future__ import annotations

import marshmallow as ma
from flask_smorest import Blueprint

from isp_admin.api.auth import api_access
from isp_admin.api.envelope import PageQuery, envelope, envelope_schema, page_links
from isp_admin.api.errors import invalid_arguments
from isp_admin.services import plans as plan_service

blp = Blueprint("api_plans", __name__, url_prefix="/api/plans", description="Service plans: speeds and prices.")
blp.register_error_handler(422, invalid_arguments)


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


PlanList = envelope_schema("PlanList", PlanSchema, many=True)
PlanOne = envelope_schema("PlanOne", PlanSchema)


@blp.route("/", methods=["GET"])
@api_access("read", "view")
@blp.arguments(PageQuery, location="query", as_kwargs=True, unknown=ma.RAISE)
@blp.response(200, PlanList)
@blp.alt_response(401, response="UNAUTHORIZED")
@blp.alt_response(403, response="FORBIDDEN")
def list_plans(page: int, page_size: int):
    """List plans, active first, then by price."""
    plans, total = plan_service.list_plans_page(page, page_size)
    return envelope(plans, pagination=page_links(page, page_size, total))


@blp.route("/<int:plan_id>/", methods=["GET"])
@api_access("read", "view")
@blp.response(200, PlanOne)
@blp.alt_response(401, response="UNAUTHORIZED")
@blp.alt_response(403, response="FORBIDDEN")
@blp.alt_response(404, response="NOT_FOUND")
def get_plan(plan_id: int):
    """Return one plan."""
    return envelope(plan_service.get_plan(plan_id))

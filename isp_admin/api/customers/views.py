"""/api/customers/: list, create, read, replace, update and close customers."""
from __future__ import annotations

import marshmallow as ma
from flask import g, request

from isp_admin.api.arguments import NotBlank
from isp_admin.api.auth import api_access
from isp_admin.api.common import (
    ListQuery,
    answers_not_modified,
    api_blueprint,
    documented,
    json_rows_response,
    list_envelope,
    ordering_field,
    page_window,
)
from isp_admin.api.envelope import envelope, envelope_schema
from isp_admin.api.idempotency import transactional
from isp_admin.api.sqljson import json_fields
from isp_admin.models.customers import CUSTOMER_STATUSES
from isp_admin.services.customers import accounts as customer_service
from isp_admin.services.platform import versions

blp = api_blueprint("api_customers", __name__, "/api/customers", "Customers: the people and businesses served.")

# ?ordering= names → the service's sort keys.
ORDERINGS = {"name": "name", "-name": "-name", "account_number": "account", "-account_number": "-account",
             "id": "oldest", "-id": "newest", "status": "status", "-status": "-status"}


class CustomerSchema(ma.Schema):
    """A customer; its status follows its subscriptions (closed is final)."""

    id = ma.fields.Integer()
    account_number = ma.fields.String()
    name = ma.fields.String()
    email = ma.fields.String(allow_none=True)
    phone = ma.fields.String(allow_none=True)
    service_address = ma.fields.String(allow_none=True)
    billing_address = ma.fields.String(allow_none=True)
    tax_id = ma.fields.String(allow_none=True)
    status = ma.fields.String(metadata={"enum": list(CUSTOMER_STATUSES)})
    notes = ma.fields.String(allow_none=True)
    created_at = ma.fields.AwareDateTime()
    updated_at = ma.fields.AwareDateTime()


def _text(length: int, **kwargs) -> ma.fields.String:
    return ma.fields.String(allow_none=True, validate=ma.validate.Length(max=length), **kwargs)


class CustomerWrite(ma.Schema):
    """The editable fields of a customer (PUT replaces them all: a field left out becomes empty)."""

    name = ma.fields.String(required=True, validate=[ma.validate.Length(min=1, max=200), NotBlank()])
    email = ma.fields.Email(allow_none=True, validate=ma.validate.Length(max=254))
    phone = _text(40)
    service_address = _text(2000)
    billing_address = _text(2000)
    tax_id = _text(40)
    notes = _text(5000)


class CustomerPatch(CustomerWrite):
    """Any subset of the editable fields."""

    def __init__(self, *args, **kwargs):
        # marshmallow has no Meta.partial: without this a PATCH would demand every required field.
        kwargs.setdefault("partial", True)
        super().__init__(*args, **kwargs)


class CustomerListQuery(ListQuery):
    """Filters of the customer list."""

    search = ma.fields.String(validate=ma.validate.Length(max=100),
                              metadata={"description": "Part of a name, account number, email, phone, PPPoE "
                                                       "login or IP address."})
    status = ma.fields.String(validate=ma.validate.OneOf(CUSTOMER_STATUSES))
    plan_id = ma.fields.Integer(validate=ma.validate.Range(min=1, max=2**31 - 1),
                                metadata={"description": "Customers with a live subscription to this plan."})
    created_from = ma.fields.Date(metadata={"description": "Created on or after this day (UTC)."})
    created_to = ma.fields.Date(metadata={"description": "Created on or before this day (UTC)."})
    ordering = ordering_field(tuple(k for k in ORDERINGS if not k.startswith("-")), "name")

    class Meta:
        ordered = True


CustomerList = envelope_schema("CustomerList", CustomerSchema, many=True)
CustomerOne = envelope_schema("CustomerOne", CustomerSchema)

def _day_bounds(args: dict) -> dict:
    from datetime import UTC, date, datetime, time, timedelta

    bounds = {}
    if args.get("created_from"):
        bounds["created_from"] = datetime.combine(args["created_from"], time.min, UTC)
    # 9999-12-31 has no next day (OverflowError, a 500): a filter up to the last day there is is no upper bound.
    if args.get("created_to") and args["created_to"] < date.max:
        bounds["created_to"] = datetime.combine(args["created_to"] + timedelta(days=1), time.min, UTC)
    return bounds


def _list_tables() -> tuple[str, ...]:
    # A plan filter or a search (PPPoE login, IP) reads subscriptions too: their changes must change the tag.
    return ("customers", "subscriptions") if request.args.get("plan_id") or request.args.get("search") \
        else ("customers",)


@blp.route("/", methods=["GET"])
@api_access("read", "view")
@blp.arguments(CustomerListQuery(), location="query", as_kwargs=False)
@blp.response(200, CustomerList)
@documented(blp)
@answers_not_modified(_list_tables)  # under the arguments: an invalid query is refused whatever If-None-Match says
def list_customers(args):
    """List customers: search, filter by status, plan or creation date, order, page by number or cursor."""
    if versions.enabled():  # PostgreSQL writes the rows' JSON and keeps the versions the ETag is made from
        page = customer_service.list_customers_json(
            json_fields(CustomerSchema), q=args.get("search") or "", status=args.get("status"),
            plan_id=args.get("plan_id"), sort=ORDERINGS[args["ordering"]], **_day_bounds(args), **page_window(args))
        joined = page.extra["json"]
        return json_rows_response([joined] if joined else [], page, args, g.get("version_etag"))
    page = customer_service.list_customers(
        q=args.get("search") or "", status=args.get("status"), plan_id=args.get("plan_id"),
        sort=ORDERINGS[args["ordering"]], with_services=False, **_day_bounds(args), **page_window(args))
    return list_envelope(page, args)


@blp.route("/", methods=["POST"])
@api_access("write", "customers.edit")
@transactional
@blp.arguments(CustomerWrite)
@blp.response(201, CustomerOne)
@documented(blp, 415, 422)
def create_customer(values):
    """Create a customer; the account number is assigned."""
    customer = customer_service.create_customer(**values)
    return envelope(customer, "Customer created."), 201, {"Location": f"/api/customers/{customer.id}/"}


@blp.route("/<id:customer_id>/", methods=["GET"])
@api_access("read", "view")
@blp.response(200, CustomerOne)
@documented(blp, 404)
def get_customer(customer_id: int):
    """Return one customer."""
    return envelope(customer_service.get_customer(customer_id))


@blp.route("/<id:customer_id>/", methods=["PUT"])
@api_access("write", "customers.edit")
@transactional
@blp.arguments(CustomerWrite)
@blp.response(200, CustomerOne)
@documented(blp, 404, 415, 422)
def replace_customer(values, customer_id: int):
    """Replace a customer's editable fields (those left out become empty)."""
    full = {name: values.get(name) for name in customer_service.EDITABLE}
    return envelope(customer_service.update_customer(customer_id, **full), "Customer updated.")


@blp.route("/<id:customer_id>/", methods=["PATCH"])
@api_access("write", "customers.edit")
@transactional
@blp.arguments(CustomerPatch)
@blp.response(200, CustomerOne)
@documented(blp, 404, 415, 422)
def update_customer(values, customer_id: int):
    """Change some of a customer's editable fields."""
    return envelope(customer_service.update_customer(customer_id, **values), "Customer updated.")


@blp.route("/<id:customer_id>/", methods=["DELETE"])
@api_access("write", "customers.edit")
@transactional
@blp.response(200, CustomerOne)
@documented(blp, 404, 422)
def close_customer(customer_id: int):
    """Close a customer's account (customers are closed, never deleted): no live service, nothing owed."""
    return envelope(customer_service.close_customer(customer_id), "Customer account closed.")

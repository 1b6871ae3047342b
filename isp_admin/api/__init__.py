"""The JSON API: flask-smorest for schemas and OpenAPI, with errors left to isp_admin.errors."""
from __future__ import annotations

from flask import Flask
from flask_smorest import Api
from werkzeug.routing import IntegerConverter

from isp_admin.api.envelope import ErrorEnvelopeSchema
from isp_admin.api.spec import DESCRIPTION, ApiConventions, register_components
from isp_admin.api.versioning import API_VERSION, register_versioning

BEARER = {"type": "http", "scheme": "bearer", "description": "An API token from /account/tokens."}


class ScopedApi(Api):
    """An Api whose errors answer in the DESIGN §4 envelope, and only on /api/ paths.

    flask-smorest registers an app-wide HTTPException handler: HTML pages would answer JSON and 405 would lose
    its Allow header. isp_admin.errors already answers /api/ paths with the envelope, so register none here.
    """

    ERROR_SCHEMA = ErrorEnvelopeSchema
    DEFAULT_ERROR_RESPONSE_NAME = None  # each operation lists the statuses it may answer, 500 included

    def _register_error_handlers(self) -> None:
        """Leave error handling to isp_admin.errors (and the API blueprints' own argument handler)."""

    def _register_responses(self) -> None:
        """Register the error responses, with an example of each stable code, and the documented headers."""
        register_components(self.spec, self.ERROR_SCHEMA)


ID_MAX = 2**31 - 1  # the id columns are PostgreSQL integers


def decimal_range_regex(high: int) -> str:
    """Return a regex matching exactly the decimals 1 to `high` (no sign, no leading zeros)."""
    digits = str(high)
    shorter = [rf"[1-9]\d{{0,{len(digits) - 2}}}"] if len(digits) > 1 else []
    same_length = [rf"{digits[:i]}[{int(i == 0)}-{int(d) - 1}]\d{{{len(digits) - i - 1}}}"
                   for i, d in enumerate(digits) if int(d) > int(i == 0)]
    return "|".join([*shorter, *same_length, digits])


class IdConverter(IntegerConverter):
    """A record id in a path: 1 to ID_MAX, or the route does not match (404).

    The range is in the regex: werkzeug would answer 405 rather than 404 for a value its converter refuses on a
    path that other methods match, and an id beyond the column's range must never reach the database.
    """

    regex = decimal_range_regex(ID_MAX)

    def __init__(self, url_map):
        super().__init__(url_map, min=1, max=ID_MAX)  # min and max only document the range (flask-smorest)


def register_api(app: Flask) -> None:
    """Set up the API on `app`: versioning, the resource blueprints (CSRF-exempt: tokens, not cookies), docs."""
    from isp_admin.api.auth import token_owner
    from isp_admin.api.billing.views import blp as billing_blp
    from isp_admin.api.customers.views import blp as customers_blp
    from isp_admin.api.docs import bp as docs_bp
    from isp_admin.api.http import register_http_rules
    from isp_admin.api.plans.views import blp as plans_blp
    from isp_admin.api.subscriptions.views import blp as subscriptions_blp
    from isp_admin.extensions import csrf
    from isp_admin.ratelimit import register_token_owner_lookup

    app.config.setdefault("API_TITLE", "ISP Admin API")
    app.config.setdefault("API_VERSION", API_VERSION)
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    # One Api per app: it holds that app's spec (tests build many apps in one process).
    api = ScopedApi(app, spec_kwargs={"security": [{"bearerAuth": []}], "info": {"description": DESCRIPTION},
                                      "extra_plugins": [ApiConventions(app)]})
    api.spec.components.security_scheme("bearerAuth", BEARER)
    app.extensions["isp_admin.api"] = api
    register_versioning(app)
    register_http_rules(app)
    register_token_owner_lookup(app, token_owner)  # the rate limiter keys API requests on the token's owner
    for blueprint in (customers_blp, billing_blp, plans_blp, subscriptions_blp):
        csrf.exempt(blueprint)
        api.register_blueprint(blueprint)
    app.register_blueprint(docs_bp)

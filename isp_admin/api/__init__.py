"""The JSON API: flask-smorest for schemas and OpenAPI, with errors left to isp_admin.errors."""
from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from isp_admin.api.envelope import ErrorEnvelopeSchema
from isp_admin.api.versioning import API_VERSION, register_versioning

BEARER = {"type": "http", "scheme": "bearer", "description": "An API token from /account/tokens."}


class ScopedApi(Api):
    """An Api whose errors answer in the DESIGN §4 envelope, and only on /api/ paths.

    flask-smorest registers an app-wide HTTPException handler: HTML pages would answer JSON and 405 would lose
    its Allow header. isp_admin.errors already answers /api/ paths with the envelope, so register none here.
    """

    ERROR_SCHEMA = ErrorEnvelopeSchema

    def _register_error_handlers(self) -> None:
        """Leave error handling to isp_admin.errors (and the API blueprints' own argument handler)."""


def register_api(app: Flask) -> None:
    """Set up the API on `app`: versioning, the resource blueprints (CSRF-exempt: tokens, not cookies), docs."""
    from isp_admin.api.billing.views import blp as billing_blp
    from isp_admin.api.customers.views import blp as customers_blp
    from isp_admin.api.docs import bp as docs_bp
    from isp_admin.api.http import register_http_rules
    from isp_admin.api.plans.views import blp as plans_blp
    from isp_admin.api.subscriptions.views import blp as subscriptions_blp
    from isp_admin.extensions import csrf

    app.config.setdefault("API_TITLE", "ISP Admin API")
    app.config.setdefault("API_VERSION", API_VERSION)
    app.config.setdefault("OPENAPI_VERSION", "3.0.3")
    # One Api per app: it holds that app's spec (tests build many apps in one process).
    api = ScopedApi(app, spec_kwargs={"security": [{"bearerAuth": []}]})
    api.spec.components.security_scheme("bearerAuth", BEARER)
    app.extensions["isp_admin.api"] = api
    register_versioning(app)
    register_http_rules(app)
    for blueprint in (customers_blp, billing_blp, plans_blp, subscriptions_blp):
        csrf.exempt(blueprint)
        api.register_blueprint(blueprint)
    app.register_blueprint(docs_bp)

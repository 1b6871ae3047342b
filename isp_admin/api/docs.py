"""The OpenAPI document generated from the API views, and Swagger UI served from static/ (no CDN)."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template

from isp_admin.web.access import PUBLIC, access

bp = Blueprint("api_docs", __name__, url_prefix="/api")


@bp.get("/openapi.json")
@access(PUBLIC)
def openapi_json():
    """Return the OpenAPI 3 document."""
    return jsonify(current_app.extensions["isp_admin.api"].spec.to_dict())


@bp.get("/docs/")
@access(PUBLIC)
def swagger_ui():
    """Render the interactive docs; the page loads only local scripts (the CSP stays strict)."""
    return render_template("api/docs.html")

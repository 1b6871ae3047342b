"""The OpenAPI document from the API views, a Postman collection made from it, and Swagger UI (local assets)."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify, render_template, request

from isp_admin.access import PUBLIC, access
from isp_admin.api.postman import postman_collection

bp = Blueprint("api_docs", __name__, url_prefix="/api")


@bp.get("/openapi.json")
@access(PUBLIC)
def openapi_json():
    """Return the OpenAPI 3 document."""
    return jsonify(current_app.extensions["isp_admin.api"].spec.to_dict())


@bp.get("/postman.json")
@access(PUBLIC)
def postman_json():
    """Return the API as a Postman Collection v2.1 (import it, then set the token variable)."""
    spec = current_app.extensions["isp_admin.api"].spec.to_dict()
    return jsonify(postman_collection(spec, request.host_url.rstrip("/")))


@bp.get("/docs/")
@access(PUBLIC)
def swagger_ui():
    """Render the interactive docs; the page loads only local scripts (the CSP stays strict)."""
    return render_template("api/docs.html")

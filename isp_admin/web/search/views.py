"""The global search: one box for customers, invoice and credit-note numbers, and payment references."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from isp_admin.errors import Invalid
from isp_admin.services.reporting import search as search_service
from isp_admin.web.access import access

bp = Blueprint("search", __name__)

DOCUMENT_PAGES = {"invoices": ("invoices.detail", "invoice_id"),
                  "credit_notes": ("credit_notes.detail", "credit_note_id"),
                  "payments": ("payments.detail", "payment_id")}


@bp.get("/search")
@access("view")
def index():
    """Find anything by what staff type; a search that finds exactly one document opens it."""
    q = request.args.get("q", "")
    try:
        results = search_service.search(q)
    except Invalid as exc:
        flash(exc.message, "danger")
        return render_template("search/index.html", results=None, q="", error=exc.details.get("q"),
                               per_kind=search_service.PER_KIND), 400
    only = results.only_document
    if only is not None:
        endpoint, argument = DOCUMENT_PAGES[only[0]]
        return redirect(url_for(endpoint, **{argument: only[1]}))
    return render_template("search/index.html", results=results, q=results.q, error=None,
                           per_kind=search_service.PER_KIND)

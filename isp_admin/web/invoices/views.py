"""Invoice pages: list, detail, issue, send, void."""
from flask import Blueprint

bp = Blueprint("invoices", __name__, url_prefix="/invoices")

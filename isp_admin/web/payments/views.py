"""Payment pages: record, list, detail, reverse; customer balance and statement."""
from flask import Blueprint

bp = Blueprint("payments", __name__, url_prefix="/payments")

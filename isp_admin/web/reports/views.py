"""Reports: AR aging, invoiced vs collected, MRR by plan, top debtors; charts and CSV."""
from flask import Blueprint

bp = Blueprint("reports", __name__, url_prefix="/reports")

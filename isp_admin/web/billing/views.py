"""Billing operations: tonight's run (dry run, then run), job runs with live progress, notifications."""
from flask import Blueprint

bp = Blueprint("billing", __name__, url_prefix="/billing")

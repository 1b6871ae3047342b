"""`flask billing …`: the billing steps by hand, each with --dry-run, and reconcile."""
from flask.cli import AppGroup

billing_cli = AppGroup("billing", help="Billing and collections steps.")

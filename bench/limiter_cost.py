"""The rate limiter's cost in-process: CPU µs per request with limits on vs off, and its Redis round trips.

Usage: .venv/bin/python bench/limiter_cost.py [--customers 300] [--repeats 200] [--json FILE]

1. A throwaway PostgreSQL database and Redis, loaded as bench/http_load.py loads them (an admin and a read token).
2. Two apps in this process with the server's settings (APP_ENV=production behind `X-Forwarded-Proto: https`,
   WARNING logs): one with rate limits off, one with them on in that Redis (budgets too large to be spent). The
   limits-off app is built first: Flask-Limiter is one object per process, and building an app with it disabled
   would switch it off for the app built before.
3. For each target (/health/, the API customer list with a token, the staff customer list signed in) one request
   on each app in turn, round after round (A B, then B A, …); each request's CPU time (time.process_time) is kept
   and the medians reported in µs, with the limiter's share: (on − off) ÷ on.
4. The Redis round trips of the limiter per request type (commands written to its connection pool's sockets; a
   pipeline is one), counted on the limits-on app after a warm-up: the same targets plus a static file and a
   failed login POST (the per-address login limit).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if not __package__:
    # Run as a script, this folder leads sys.path, and its profile.py would shadow the standard one.
    sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

from bench import http_load  # noqa: E402  (after the path insert above)

HTTPS = {"X-Forwarded-Proto": "https"}
BASE = "https://localhost"
CPU_TARGETS = {"health": "/health/", "api_customers": "/api/customers/", "staff_list": "/customers/"}
TRIP_TARGETS = (*CPU_TARGETS, "static", "login_post")
UNSPENDABLE = "1000000/minute"  # a budget no run spends, so every request is served and counted
LABELS = {"health": "/health/ (exempt)", "api_customers": "API customer list, token",
          "staff_list": "staff customer list, signed in", "static": "/static/css/app.css (exempt)",
          "login_post": "login POST (failed attempt)"}


@dataclass
class RoundTrips:
    """Round trips to Redis made through one connection pool while counting."""

    pool: object
    count: int = 0
    commands: list[str] = field(default_factory=list)


@contextmanager
def redis_round_trips(pool):
    """Count the writes to the sockets of `pool`'s connections inside the block (a pipeline's batch is one)."""
    from redis.connection import AbstractConnection

    trips = RoundTrips(pool)
    original = AbstractConnection.send_packed_command

    def counted(connection, command, check_health=True):
        if connection in pool._in_use_connections:  # noqa: SLF001  (the limiter's pool only, not the cache's)
            trips.count += 1
            first = command[0] if isinstance(command, list | tuple) else command
            trips.commands.append(bytes(first[:40]).decode(errors="replace"))
        return original(connection, command, check_health)

    AbstractConnection.send_packed_command = counted
    try:
        yield trips
    finally:
        AbstractConnection.send_packed_command = original


def limiter_pool():
    """Return the connection pool of the rate limiter's Redis."""
    from isp_admin.extensions import limiter

    return limiter.storage.get_connection().connection_pool


def make_app(env: dict, workdir: Path, **overrides: str):
    """Create the app in-process with the server's environment and `overrides`."""
    from isp_admin import create_app
    from isp_admin.config import load_config

    return create_app(load_config(workdir / f"instance-{len(list(workdir.iterdir()))}", {**env, **overrides}))


def csrf_token(client, path: str = "/login") -> str:
    """Return the CSRF token of the form at `path`."""
    page = client.get(path, headers=HTTPS, base_url=BASE)
    found = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.get_data(as_text=True))
    if found is None:
        raise RuntimeError(f"{path} gave no CSRF token (status {page.status_code})")
    return found.group(1)


def signed_in_client(app, email: str, password: str):
    """Sign the bench admin in through the login form; return the client."""
    client = app.test_client()
    answer = client.post("/login", data={"email": email, "password": password,
                                         "csrf_token": csrf_token(client)},
                         headers={**HTTPS, "Referer": f"{BASE}/login"}, base_url=BASE)
    if answer.status_code != 302:
        raise RuntimeError(f"sign-in failed (status {answer.status_code})")
    return client


class Requests:
    """The requests of each target on one app: a signed-in client and the API token."""

    def __init__(self, app, email: str, password: str, token: str):
        self.client = signed_in_client(app, email, password)
        self.anonymous = app.test_client()
        self.token = {**HTTPS, "Authorization": f"Bearer {token}"}
        self.login_csrf = csrf_token(self.anonymous)

    def send(self, target: str) -> int:
        """Send one request of `target`; return its status."""
        if target == "api_customers":
            answer = self.anonymous.get(CPU_TARGETS[target], headers=self.token, base_url=BASE)
        elif target == "static":
            answer = self.anonymous.get("/static/css/app.css", headers=HTTPS, base_url=BASE)
        elif target == "login_post":
            answer = self.anonymous.post("/login", data={"email": "nobody@example.com", "password": "wrong",
                                                         "csrf_token": self.login_csrf},
                                         headers={**HTTPS, "Referer": f"{BASE}/login"}, base_url=BASE)
        else:
            answer = self.client.get(CPU_TARGETS[target], headers=HTTPS, base_url=BASE)
        answer.close()
        return answer.status_code


def fetch(requests: Requests, target: str) -> None:
    """Send one request of `target`; fail loudly on an answer it should not give."""
    status = requests.send(target)
    if status not in (200, 304) and not (target == "login_post" and status in (200, 302)):
        raise RuntimeError(f"{target} answered {status}")


def cpu_per_request(on: Requests, off: Requests, repeats: int) -> dict[str, dict]:
    """Median CPU µs per request of each target with limits on and off, interleaved request by request."""
    samples = {(target, mode): [] for target in CPU_TARGETS for mode in ("on", "off")}
    for target in CPU_TARGETS:  # warm both: templates compiled, caches filled, Lua scripts loaded
        for requests in (on, off, on, off):
            fetch(requests, target)
    for round_number in range(repeats):
        # Which app goes first alternates: the first request after another target runs on colder caches.
        order = (("on", on), ("off", off)) if round_number % 2 == 0 else (("off", off), ("on", on))
        for target in CPU_TARGETS:
            for mode, requests in order:
                started = time.process_time()
                fetch(requests, target)
                samples[(target, mode)].append((time.process_time() - started) * 1e6)
    out = {}
    for target in CPU_TARGETS:
        on_us, off_us = (statistics.median(samples[(target, mode)]) for mode in ("on", "off"))
        out[target] = {"on_us": on_us, "off_us": off_us, "limiter_us": on_us - off_us,
                       "limiter_share": (on_us - off_us) / on_us if on_us else 0.0, "samples": repeats}
    return out


def round_trips(on: Requests) -> dict[str, dict]:
    """The limiter's Redis round trips per request of each type (after a warm-up request of each)."""
    out = {}
    for target in TRIP_TARGETS:
        on.send(target)
        with redis_round_trips(limiter_pool()) as trips:
            on.send(target)
        out[target] = {"round_trips": trips.count, "commands": trips.commands}
    return out


def markdown(report: dict) -> str:
    """The figures as a Markdown table."""
    lines = [f"Rate limiter in-process ({report['repeats']} interleaved rounds, CPU µs per request, medians; "
             "Redis round trips of the limiter per request):", "",
             "| request | limits on µs | limits off µs | limiter µs | limiter's share | Redis round trips |",
             "|---|---|---|---|---|---|"]
    for target in TRIP_TARGETS:
        trips = report["round_trips"][target]["round_trips"]
        cpu = report["cpu"].get(target)
        figures = (f"{cpu['on_us']:,.0f} | {cpu['off_us']:,.0f} | {cpu['limiter_us']:,.0f} | "
                   f"{cpu['limiter_share']:.1%}") if cpu else "– | – | – | –"
        lines.append(f"| {LABELS[target]} | {figures} | {trips} |")
    return "\n".join(lines)


def bench_admin(app, email: str) -> tuple[str, str]:
    """Create an admin and a read token in an existing database (as the seeded run's commands do); return both
    secrets (password, token)."""
    from isp_admin.extensions import db
    from isp_admin.services.identity import tokens, users

    password = secrets.token_urlsafe(18)
    with app.app_context():
        user = users.create_user(email, "Limiter Bench", "admin", password)
        _, token = tokens.create_token(user.id, "limiter-bench", "read", None)
        db.session.commit()
    return password, token


def measure(env: dict, workdir: Path, repeats: int, credentials=None) -> dict:
    """Build both apps on `env`'s database and Redis and measure them; `credentials(app)` makes the admin and
    token when the database has none (else the seeded ones in `env`)."""
    from isp_admin.extensions import db

    off_app = make_app(env, workdir, RATELIMIT_ENABLED="false")  # first: see the module's docstring
    on_app = make_app(env, workdir, RATELIMIT_ENABLED="true", RATE_LIMIT_AUTHENTICATED=UNSPENDABLE,
                      RATE_LIMIT_ANONYMOUS=UNSPENDABLE, RATE_LIMIT_LOGIN=UNSPENDABLE)
    try:
        email, password, token = credentials(off_app)
        on, off = (Requests(app, email, password, token) for app in (on_app, off_app))
        return {"round_trips": round_trips(on), "cpu": cpu_per_request(on, off, repeats)}
    finally:
        for app in (off_app, on_app):
            with app.app_context():
                db.engine.dispose()  # the database may be dropped next: no connection of ours may hold it


def main(argv=None) -> dict:
    """Run the benchmark and report its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=200, help="interleaved rounds of every target")
    parser.add_argument("--database-url", default="",
                        help="measure on this migrated database (an admin and token are added) instead of seeding one")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="with --database-url")
    parser.add_argument("--json", default="", help="also write the report to this file")
    args = parser.parse_args(argv)
    if args.database_url:
        tag = f"limiter-bench-{secrets.token_hex(4)}"  # this run's keys and admin
        env = {**http_load.server_env(args.database_url, args.redis_url), "RATELIMIT_KEY_PREFIX": tag,
               "CACHE_KEY_PREFIX": f"{tag}:"}
        email = f"{tag}@example.com"
        with tempfile.TemporaryDirectory(prefix="isp-limiter-bench-") as workdir:
            figures = measure(env, Path(workdir), args.repeats, lambda app: (email, *bench_admin(app, email)))
    else:
        with http_load.seeded(args.customers, "limiter") as data:
            workdir = Path(tempfile.mkdtemp(prefix="isp-limiter-bench-", dir=data.workdir))
            seeded = (http_load.ADMIN_EMAIL, data.password, data.loaded["token"])
            figures = measure(data.env, workdir, args.repeats, lambda _app: seeded)
    report = {"customers": None if args.database_url else args.customers, "repeats": args.repeats, **figures,
              "commit": http_load.commit_id()}
    report["markdown"] = markdown(report)
    print(report["markdown"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()

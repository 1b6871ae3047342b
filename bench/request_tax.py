"""The per-request tax: CPU per request of our /health/ against a bare Flask route, in-process, as deployed.

Usage: .venv/bin/python bench/request_tax.py [--requests 2000] [--repeats 9] [--profile-requests 3000]
       [--redis-url redis://127.0.0.1:6379/0]

Both apps are called as WSGI callables with a prebuilt environ (no server, no sockets), so the figure is what the
app itself costs a worker. Our app is built by create_app from a production environment, the shipped defaults:
APP_ENV=production, rate limits ON against a real Redis, LOG_LEVEL=INFO with JSON request lines written to a file
(stderr is redirected to one, as gunicorn's is in a container), ProxyFix for one proxy, and every request carries
`X-Forwarded-Proto: https` and `X-Forwarded-For` as a TLS proxy sends them. The yardstick is bench/bare_app.py
(`Flask(__name__)`, one route returning {"status": "ok"}).

CPU time (time.process_time), not wall time: the machine is shared. Rounds alternate bare, ours, bare, ours…
and the medians of the rounds are reported. Then one cProfile run of ours names where the time goes: the
cumulative time of every hook the app registered (before/after request, teardown, signals, session interface,
ProxyFix, the view), per request, grouped by the layer that registered it.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ is first on the path and its profile.py would stand in for the standard library's,
# which cProfile imports.
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path.pop(0)
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import cProfile  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402

PROXY_HEADERS = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
DEFAULT_REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
GOAL_RATIO = 1.5  # issue 17: /health/ at >= 60% of the bare route's throughput as deployed, ~1.5x its CPU in-process

# First match wins, tested against "<module>.<qualified name>" of a hook; the layer it is reported under.
LAYERS = (
    ("security headers (Talisman, CORP/COOP, no-store)", ("flask_talisman", "isp_admin.security")),
    ("rate limiter (Flask-Limiter)", ("flask_limiter", "isp_admin.ratelimit")),
    ("request logging (structlog)", ("isp_admin.observability.logs",)),
    ("metrics (prometheus_client)", ("isp_admin.observability.metrics",)),
    ("request id", ("isp_admin.observability.request_id",)),
    ("timing (X-Response-Time, Server-Timing)", ("isp_admin.observability.timing",)),
    ("session and sign-in (cookie session, Flask-Login, actor)", ("isp_admin.portal.session", "flask_login",
                                                                  "isp_admin.web.auth", "flask.sessions")),
    ("CSRF (Flask-WTF)", ("flask_wtf",)),
    ("edge checks", ("isp_admin.edge",)),
    ("API rules (versioning, media types, ETag)", ("isp_admin.api",)),
    ("database session (autocommit reads, teardown)", ("isp_admin.autocommit", "isp_admin.errors", "flask_sqlalchemy")),
    ("ProxyFix", ("werkzeug.middleware.proxy_fix",)),
    ("the view", ("isp_admin.health",)),
    ("Flask and Werkzeug themselves", ("flask.ctx",)),
)


SHOWN_SETTINGS = ("APP_ENV", "RATELIMIT_ENABLED", "RATELIMIT_STORAGE_URI", "LOG_LEVEL", "LOG_FORMAT", "PROXY_FIX_X_FOR")


def production_env(database_url: str, redis_url: str) -> dict[str, str]:
    """The environment a deployment runs with (issue 17's shipped defaults), pointed at this machine's services."""
    return {
        "APP_ENV": "production", "PUBLIC_URL": "https://isp.example.com", "SECRET_KEY": secrets.token_hex(32),
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "LOG_LEVEL": "INFO", "PROXY_FIX_X_FOR": "1",
        "RATELIMIT_ENABLED": "true", "RATELIMIT_KEY_PREFIX": f"request-tax:{os.getpid()}",
        "CACHE_KEY_PREFIX": f"request-tax:{os.getpid()}:", "RQ_QUEUE": f"request_tax_{os.getpid()}",
        "NETWORK_KICK": "false",
    }


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """Set environment variables for the block, then put the old ones back."""
    old = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def build_our_app(redis_url: str, instance: Path):
    """Build the app as wsgi.py does, from a production environment."""
    from isp_admin import create_app

    # /health/ touches no database; an SQLite file keeps this benchmark free of a PostgreSQL it does not use.
    env = production_env(f"sqlite:///{instance / 'bench.sqlite3'}", redis_url)
    with environment(env):
        app = create_app()
    return app


def build_bare_app():
    """The yardstick: bench/bare_app.py's 5-line app."""
    from bench.bare_app import app

    return app


def prebuilt_environ(path: str):
    """A WSGI environ for GET `path` through a TLS proxy; copied per call (ProxyFix and Flask write into it)."""
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(path=path, base_url="http://isp.example.com", headers=PROXY_HEADERS)
    try:
        return builder.get_environ()
    finally:
        builder.close()


def caller(app, path: str) -> Callable[[], int]:
    """Return a function that runs one request through `app` as a WSGI server would, and returns its status."""
    environ = prebuilt_environ(path)
    status = []

    def start_response(line, _headers, _exc_info=None):
        status.append(line)

    def call() -> int:
        status.clear()
        body = app(dict(environ), start_response)
        try:
            for _chunk in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return int(status[0].split(" ", 1)[0])

    return call


def cpu_us_per_request(call: Callable[[], int], requests: int) -> float:
    """CPU microseconds per request over `requests` calls."""
    started = time.process_time()
    for _ in range(requests):
        call()
    return (time.process_time() - started) / requests * 1e6


def interleaved(calls: dict[str, Callable[[], int]], requests: int, repeats: int) -> dict[str, list[float]]:
    """Run each call `requests` times per round, the calls alternating round by round; µs per request per round."""
    rounds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            rounds[name].append(cpu_us_per_request(call, requests))
    return rounds


def _hook_name(hook) -> tuple[str, object]:
    """A hook's "<module>.<qualified name>" and the function cProfile sees run for it."""
    while isinstance(hook, partial):
        hook = hook.func
    func = getattr(hook, "__func__", hook)  # a bound method's function
    inner = getattr(func, "__wrapped__", None)
    shown = inner or func
    module = getattr(shown, "__module__", "") or ""
    name = getattr(shown, "__qualname__", None) or type(shown).__qualname__
    return f"{module}.{name}", func


def registered_hooks(app) -> list[tuple[str, str, object]]:
    """Every per-request hook `app` runs: (kind, name, function), in registration order."""
    from flask import request_finished, request_started

    hooks = []
    for kind, table in (("before_request", app.before_request_funcs), ("after_request", app.after_request_funcs),
                        ("teardown_request", app.teardown_request_funcs),
                        ("teardown_appcontext", {None: app.teardown_appcontext_funcs})):
        for hook in table.get(None, []):
            hooks.append((kind, *_hook_name(hook)))
    for kind, signal in (("request_started", request_started), ("request_finished", request_finished)):
        for receiver in signal.receivers_for(app):
            hooks.append((kind, *_hook_name(receiver)))
    interface = type(app.session_interface)
    hooks.append(("session", f"{interface.__module__}.{interface.__qualname__}.open_session",
                  interface.open_session))
    hooks.append(("session", f"{interface.__module__}.{interface.__qualname__}.save_session",
                  interface.save_session))
    if hasattr(app.wsgi_app, "__self__") is False and type(app.wsgi_app).__name__ == "ProxyFix":
        hooks.append(("middleware", "werkzeug.middleware.proxy_fix.ProxyFix.__call__", type(app.wsgi_app).__call__))
    hooks.append(("routing", "flask.ctx.RequestContext.match_request", _request_context_method("match_request")))
    for endpoint in ("health.health",):
        view = app.view_functions.get(endpoint)
        if view is not None:
            hooks.append(("view", *_hook_name(view)))
    return hooks


def _request_context_method(name: str):
    from flask.ctx import RequestContext

    return getattr(RequestContext, name)


def layer_of(name: str) -> str:
    """Return the layer a hook belongs to (LAYERS), or "other"."""
    for layer, prefixes in LAYERS:
        if name.startswith(prefixes):
            return layer
    return "other"


def _code_key(func) -> tuple[str, int, str] | None:
    code = getattr(func, "__code__", None)
    if code is None:
        return None
    return code.co_filename, code.co_firstlineno, code.co_name


def profile_layers(app, call: Callable[[], int], requests: int) -> dict:
    """Run `requests` calls under cProfile; return each hook's cumulative µs per request and the whole's."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (calls, primitive, tottime, cumtime, callers)}
    total = sum(tottime for _calls, _prim, tottime, _cum, _callers in stats.values())
    def cumulative(func) -> float:
        key = _code_key(func)
        entry = stats.get(key) if key else None
        return entry[3] if entry else 0.0

    def row(kind: str, name: str, layer: str, seconds: float) -> dict:
        return {"kind": kind, "hook": name, "layer": layer, "us": seconds / requests * 1e6,
                "share": seconds / total if total else 0.0}

    from flask import Flask

    rows, hooks_seconds = [], 0.0
    for kind, name, func in registered_hooks(app):
        seconds = cumulative(func)
        if kind == "middleware":  # it wraps the whole app: only what it adds itself is its own
            seconds -= cumulative(Flask.wsgi_app)
        hooks_seconds += seconds
        rows.append(row(kind, name, layer_of(name), seconds))
    # Whatever no hook accounts for: request and app contexts, hook dispatch, routing's setup, the response object,
    # the WSGI iteration (what the bare route pays too, plus the price of each registered hook's dispatch).
    rows.append(row("core", "flask.Flask.wsgi_app minus the hooks above", "Flask and Werkzeug themselves",
                    total - hooks_seconds))
    return {"rows": rows, "profiled_us": total / requests * 1e6}


def layer_totals(rows: list[dict]) -> list[dict]:
    """Sum the hook rows by layer, largest first."""
    totals: dict[str, dict] = {}
    for row in rows:
        entry = totals.setdefault(row["layer"], {"layer": row["layer"], "us": 0.0, "share": 0.0, "hooks": 0})
        entry["us"] += row["us"]
        entry["share"] += row["share"]
        entry["hooks"] += 1
    return sorted(totals.values(), key=lambda e: -e["us"])


def table(result: dict) -> str:
    """The results as markdown: the headline figures, then the hooks by layer (cProfile, per request)."""
    lines = [
        "| route | CPU µs/request (median) | rounds (min–max) | ÷ bare |",
        "| --- | --- | --- | --- |",
    ]
    for key, label in (("bare", "bare Flask route"), ("health", "our /health/")):
        figure = result[key]
        lines.append(f"| {label} | {figure['median_us']:.0f} | {min(figure['rounds']):.0f}–{max(figure['rounds']):.0f} "
                     f"| {figure['median_us'] / result['bare']['median_us']:.2f}× |")
    lines += ["", f"Where /health/'s time goes (cProfile, {result['profile']['requests']:,} requests; cProfile's "
                  f"own overhead inflates every figure, so read them as shares: "
                  f"{result['profile']['profiled_us']:.0f} µs/request profiled in all):", "",
              "| layer | hook | µs/request | share |", "| --- | --- | --- | --- |"]
    for row in sorted(result["profile"]["rows"], key=lambda r: (r["layer"], -r["us"])):
        lines.append(f"| {row['layer']} | `{row['hook']}` ({row['kind']}) | {row['us']:.1f} | {row['share']:.1%} |")
    lines += ["", "| layer | µs/request | share |", "| --- | --- | --- |"]
    for entry in result["profile"]["layers"]:
        lines.append(f"| {entry['layer']} | {entry['us']:.1f} | {entry['share']:.1%} |")
    return "\n".join(lines)


def measure(requests: int, repeats: int, profile_requests: int, redis_url: str) -> dict:
    """Build both apps, check they answer 200, time them interleaved and profile ours."""
    with tempfile.TemporaryDirectory(prefix="request-tax-") as workdir:
        log_path = Path(workdir) / "requests.log"
        with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stderr(log):
            ours = build_our_app(redis_url, Path(workdir) / "instance")
            calls = {"bare": caller(build_bare_app(), "/"), "health": caller(ours, "/health/")}
            statuses = {name: call() for name, call in calls.items()}
            if set(statuses.values()) != {200}:
                raise RuntimeError(f"a route did not answer 200: {statuses}")
            for call in calls.values():  # warm up: first-request work (imports, caches) is not the steady state
                cpu_us_per_request(call, max(1, requests // 10))
            rounds = interleaved(calls, requests, repeats)
            profiled = profile_layers(ours, calls["health"], profile_requests)
            settings = {name: ours.config[name] for name in SHOWN_SETTINGS}
        with log_path.open(encoding="utf-8") as written:
            log_lines = sum(1 for _ in written)
    result = {name: {"median_us": statistics.median(values), "rounds": values} for name, values in rounds.items()}
    result["ratio"] = result["health"]["median_us"] / result["bare"]["median_us"]
    result["goal_ratio"] = GOAL_RATIO
    result["requests"], result["repeats"] = requests, repeats
    result["log_lines"] = log_lines
    result["settings"] = settings
    profiled["requests"] = profile_requests
    profiled["layers"] = layer_totals(profiled["rows"])
    result["profile"] = profiled
    result["table"] = table(result)
    return result


def main(argv=None) -> dict:
    """Measure and print the table; return every figure (bench/http_load.py writes the table into RESULTS.md)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--repeats", type=int, default=9, help="rounds per app, interleaved")
    parser.add_argument("--profile-requests", type=int, default=3000)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    args = parser.parse_args(argv)
    result = measure(args.requests, args.repeats, args.profile_requests, args.redis_url)
    print(result["table"])
    print("\nSettings: " + ", ".join(f"{name}={value}" for name, value in result["settings"].items()))
    print(f"\n/health/ costs {result['ratio']:.2f}× the bare route's CPU (goal ≤ {GOAL_RATIO}×).")
    return result


if __name__ == "__main__":
    main()

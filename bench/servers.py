"""Server comparison: gunicorn gthread, gunicorn sync and granian (WSGI) side by side, on our app and a bare route.

Usage: .venv/bin/python bench/servers.py [--customers 300] [--duration 5] [--rounds 3] [--connections 16]
       [--servers gthread,sync,granian]

One throwaway database and Redis (bench/http_load.py's `seeded`), our app (wsgi:app) with the shipped defaults
(APP_ENV=production behind `X-Forwarded-Proto: https`, rate limits on with a budget no client reaches, INFO JSON
request logs to a file) and the bare 5-line Flask app (bench/bare_app.py), each under:

- gthread: gunicorn with deploy/gunicorn.conf.py as deployed (2 workers × 8 threads);
- sync: the same config with `--worker-class sync` (2 workers, one request at a time each, no keep-alive);
- granian: `granian --interface wsgi`, 2 workers × 8 blocking threads, the same backlog, metrics directory and
  malloc arena cap (MALLOC_ARENA_MAX=2) as the gunicorn config gives its workers.

Worker recycling is off for all three (granian recycles by lifetime or RSS only, never by request count, so a
5 s round would recycle gunicorn alone). wrk drives `/health/`, the API customer list with a read token (random
pages, sizes, orderings and cursor walks: bench/wrk/load.lua) and the bare route. Rounds are interleaved, the
server order rotating each round, and the medians reported: the machine is shared, so one run says little. Beside
req/s and p95, each target reports the server's CPU time per request (master and workers, from /proc: what the
server itself costs, less sensitive than req/s to what else the cores are doing) and each server its workers'
RSS after the round.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_load import (  # noqa: E402  (after the path insert above)
    BARE_APP,
    ensure_wrk,
    free_port,
    lua_literal,
    prepare,
    raise_open_files,
    run_wrk,
    seeded,
    shipped_env,
    stop,
    wait_ready,
    worker_pids,
    worker_rss,
)

SERVERS = ("gthread", "sync", "granian")
# Our app's targets, then the bare app's: (app, wrk target).
TARGETS = (("ours", "health"), ("ours", "api_customers"), ("bare", "bare"))
LABELS = {"health": "our /health/", "api_customers": "API customer list (token)", "bare": "bare Flask route"}
WORKERS, THREADS = 2, 8
TICKS = os.sysconf("SC_CLK_TCK")


def server_command(kind: str, app: str, port: int, metrics_dir: Path) -> tuple[list[str], dict]:
    """Return the command line of server `kind` serving `app` on 127.0.0.1:port, and its extra environment."""
    if kind in ("gthread", "sync"):
        command = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", app]
        env = {"GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(WORKERS)}
        if kind == "sync":
            # Command-line settings override the config file's; threads > 1 would turn sync back into gthread.
            command[3:3] = ["--worker-class", "sync"]
            env["GUNICORN_THREADS"] = "1"
        return command, env
    if kind == "granian":
        command = [sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", str(WORKERS),
                   "--blocking-threads", str(THREADS), "--host", "127.0.0.1", "--port", str(port), "--http", "1",
                   "--no-ws", "--backlog", "2048", "--log-level", "warning", app]
        # What deploy/gunicorn.conf.py does for gunicorn's workers: merged metrics, two malloc arenas.
        metrics_dir.mkdir(parents=True, exist_ok=True)
        return command, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "MALLOC_ARENA_MAX": "2"}
    raise ValueError(f"unknown server {kind!r}")


@contextmanager
def serving(kind: str, app: str, env: dict, workdir: Path, name: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Run server `kind` with `app` on a free port; yield its base URL and process once it answers."""
    port = free_port()
    command, extra = server_command(kind, app, port, workdir / f"metrics-{name}")
    log = workdir / f"{name}.log"
    with log.open("ab") as out:
        server = subprocess.Popen(command, cwd=ROOT, env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server, log, path="/health/ready/" if app == "wsgi:app" else "/")
        yield f"http://127.0.0.1:{port}", server
    finally:
        stop(server)


def cpu_seconds(pids: list[int]) -> float:
    """Return the user + system CPU seconds the live processes `pids` have used."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone (a recycled worker): its time is lost, so recycling is off here
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / TICKS


def measure(wrk: str, base: str, server: subprocess.Popen, target: str, data_file: Path, args) -> dict:
    """Run wrk at one target; return its figures with the server's CPU time per request."""
    pids = [server.pid, *worker_pids(server.pid)]
    before = cpu_seconds(pids)
    figures = run_wrk(wrk, base, target, data_file, args.duration, args.connections, args.timeout)
    used = cpu_seconds(pids) - before
    figures["cpu_ms_per_request"] = used * 1000 / figures["requests"] if figures["requests"] else None
    return figures


def summarize(rounds: dict) -> dict:
    """Return, per server and target, the medians over rounds (errors summed)."""
    out: dict = {}
    for kind, per_target in rounds["figures"].items():
        out[kind] = {}
        for target, runs in per_target.items():
            cpu = [r["cpu_ms_per_request"] for r in runs if r["cpu_ms_per_request"] is not None]
            out[kind][target] = {"rps": median(r["rps"] for r in runs), "p95_ms": median(r["p95_ms"] for r in runs),
                                 "cpu_ms_per_request": median(cpu) if cpu else None,
                                 "errors": sum(r["errors"] for r in runs), "rounds": len(runs),
                                 "rps_rounds": [round(r["rps"], 1) for r in runs]}
        out[kind]["rss_mb"] = {app: median(v) for app, v in rounds["rss"][kind].items()}
    return out


def markdown(summary: dict, args) -> str:
    """Render the medians as a markdown table, with each server's req/s as a ratio to gthread's."""
    lines = ["| server | target | req/s (median) | ÷ gthread | p95 ms | server CPU ms/request | errors | "
             "RSS per worker MB |", "|---|---|---|---|---|---|---|---|"]
    for kind, per_target in summary.items():
        for _, target in TARGETS:
            f = per_target[target]
            base = summary.get("gthread", {}).get(target, {}).get("rps")
            ratio = f"{f['rps'] / base:.2f}" if base else "—"
            cpu = f"{f['cpu_ms_per_request']:.2f}" if f["cpu_ms_per_request"] is not None else "—"
            rss = per_target["rss_mb"].get("bare" if target == "bare" else "ours", 0.0)
            lines.append(f"| {kind} | {LABELS[target]} | {f['rps']:,.0f} | {ratio} | {f['p95_ms']:.1f} | {cpu} | "
                         f"{f['errors']} | {rss:.0f} |")
    lines.append(f"\n{args.rounds} interleaved rounds × {args.duration} s per target, wrk {args.connections} "
                 f"connections, {args.customers:,} customers, {os.cpu_count()} cores shared with PostgreSQL, Redis "
                 "and wrk.")
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Run the comparison and report its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--duration", type=int, default=5, help="seconds per target per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--timeout", default="2s", help="wrk's per-request timeout")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS))
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)
    kinds = [k for k in args.servers.split(",") if k]
    wrk = ensure_wrk()
    raise_open_files()
    rounds: dict = {"figures": {k: {t: [] for _, t in TARGETS} for k in kinds},
                    "rss": {k: {"ours": [], "bare": []} for k in kinds}}
    with seeded(args.customers, "servers") as bench:
        # The limiter runs as shipped, with a budget one client never spends (this compares servers, not limits);
        # recycling off: see the module docstring.
        env = {**shipped_env(bench.env, 10_000_000), "GUNICORN_MAX_REQUESTS": "0"}
        data_file = bench.workdir / "data.lua"
        for number in range(args.rounds):
            order = kinds[number % len(kinds):] + kinds[:number % len(kinds)]
            for kind in order:
                for app, name in (("wsgi:app", "ours"), (BARE_APP, "bare")):
                    with serving(kind, app, env, bench.workdir, f"{kind}-{name}-{number}") as (base, server):
                        if not data_file.exists():
                            data = prepare(base, bench.url, bench.loaded["token"], "", args.customers,
                                           random.Random(1))
                            data_file.write_text("return " + lua_literal(data) + "\n")
                        for target_app, target in TARGETS:
                            if target_app != name:
                                continue
                            figures = measure(wrk, base, server, target, data_file, args)
                            rounds["figures"][kind][target].append(figures)
                            print(f"round {number + 1} {kind:<8} {target:<14} {figures['rps']:8.1f} req/s  "
                                  f"p95 {figures['p95_ms']:6.1f} ms  cpu {figures['cpu_ms_per_request'] or 0:.3f} "
                                  f"ms/req  errors {figures['errors']}", flush=True)
                        rounds["rss"][kind][name].append(max(worker_rss(server.pid), default=0.0))
    summary = summarize(rounds)
    table = markdown(summary, args)
    print(table)
    report = {"servers": summary, "rounds": args.rounds, "duration": args.duration,
              "connections": args.connections, "customers": args.customers, "markdown": table}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()

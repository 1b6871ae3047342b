"""Web worker memory: a fresh interpreter's RSS after import and create_app(), the modules that cost it, and real
gunicorn workers' RSS, PSS and USS after a few hundred requests (issue 6 goal: ≤ 80 MB RSS per web worker).

Usage: .venv/bin/python bench/memory.py [--customers 2000] [--requests 400] [--rounds 2] [--concurrency 8]
       [--top 25] [--no-server] [--json FILE]

1. Fresh interpreter (as a worker is configured: APP_ENV=production, JSON logs): RSS at start, after
   `import isp_admin`, after `create_app()`; then, in another fresh interpreter, the RSS each module's own import
   added (its code, objects and shared libraries, nested imports counted where they happen), summed per package.
2. Real workers: a throwaway PostgreSQL database and Redis, `flask db upgrade`, `flask data generate-test-data`,
   invoices and payments, an admin and a read token (bench/http_load.py's seed), then gunicorn with
   deploy/gunicorn.conf.py. RSS, PSS and USS (/proc/PID/smaps_rollup) of the master and each worker once ready,
   then after each round of requests over the API lists and staff pages (token and signed-in session, several
   at a time so each worker's threads all serve), so growth during the run shows round by round.

The server's environment is this one's (as in bench/http_load.py), so a variant is measured by setting it:
e.g. GUNICORN_THREADS=4, or MALLOC_ARENA_MAX=64 for glibc's own arena limit instead of the config's cap.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Modules a web worker should not load at start: each is needed by some paths only (see tests/test_memory.py).
WATCHED = ("alembic", "flask_migrate", "mako", "cryptography.hazmat", "rq", "rq_scheduler", "weasyprint", "rich",
           "pygments", "faker", "factory", "yaml", "apispec", "sqlite3")


def probe_env() -> dict:
    """The environment of a worker: production settings, JSON logs; nothing is connected to at start."""
    env = {**os.environ, "APP_ENV": "production", "PUBLIC_URL": "https://isp.example.com", "SECRET_KEY": "m" * 48,
           "LOG_FORMAT": "json",
           "DATABASE_URL": os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
           "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


# Run with `python -c` so that nothing but the interpreter is loaded before the app: this script's own imports
# (argparse, subprocess, concurrent.futures …) would otherwise count as already paid for.
PROBE = """
import json, os, sys
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
mode, top, watched = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
if mode == "plain":
    start = rss()
    from isp_admin import create_app
    imported = rss()
    create_app()
    loaded = {n: sum(1 for m in sys.modules if m == n or m.startswith(n + ".")) for n in watched}
    print(json.dumps({"start": start, "import": imported, "create_app": rss(), "modules": len(sys.modules),
                      "watched": {k: v for k, v in loaded.items() if v}}))
else:
    # Charge each module the RSS its own execution added, less what its nested imports added (counted there).
    own, stack = {}, []
    def wrap(exec_module):
        def costed(module):
            started = rss()
            stack.append(0.0)
            try:
                exec_module(module)
            finally:
                nested, total = stack.pop(), rss() - started
                own[module.__name__] = own.get(module.__name__, 0.0) + total - nested
                if stack:
                    stack[-1] += total
        return costed
    class Costing:
        def find_spec(self, name, path, target=None):
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(name, path, target)
                if spec is not None:
                    # The loader's own method is wrapped, not the loader: resource readers must see the real one.
                    if spec.loader is not None and not getattr(spec.loader, "_costed", False):
                        try:
                            spec.loader.exec_module = wrap(spec.loader.exec_module)
                            spec.loader._costed = True
                        except (AttributeError, TypeError):
                            pass
                    return spec
            return None
    sys.meta_path.insert(0, Costing())
    from isp_admin import create_app
    create_app()
    packages = {}
    for name, mb in own.items():
        packages[name.split(".")[0]] = packages.get(name.split(".")[0], 0.0) + mb
    def best(d):
        return sorted(d.items(), key=lambda kv: -kv[1])[:top]
    print(json.dumps({"packages": best(packages), "modules": best(own)}))
"""


def fresh_interpreter(top: int) -> dict:
    """Measure import and create_app() in fresh interpreters; return the figures."""
    figures = {}
    for kind in ("plain", "modules"):
        done = subprocess.run([sys.executable, "-c", PROBE, kind, str(top), ",".join(WATCHED)], cwd=ROOT,
                              env=probe_env(), capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"probe {kind} failed:\n{done.stderr}")
        figures[kind] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def memory_of(pid: int) -> dict:
    """RSS, PSS and USS (private pages) of one process, in MB, from /proc/PID/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return {"rss": fields["Rss"], "pss": fields["Pss"],
            "uss": fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0)}


def snapshot(master: int) -> dict:
    """The memory of the master and of each worker now."""
    from bench.http_load import worker_pids

    return {"master": memory_of(master), "workers": [memory_of(pid) for pid in sorted(worker_pids(master))]}


def sample(url: str, rng: random.Random) -> dict:
    """Ids and search terms the requests pick from."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as conn:
        customers = [r[0] for r in conn.execute(text("SELECT id FROM customers ORDER BY random() LIMIT 200"))]
        invoices = [r[0] for r in conn.execute(text("SELECT id FROM invoices ORDER BY random() LIMIT 200"))]
        names = [r[0] for r in conn.execute(text("SELECT name FROM customers ORDER BY random() LIMIT 100"))]
        total = conn.execute(text("SELECT count(*) FROM customers")).scalar()
    engine.dispose()
    terms = [rng.choice(name.split())[:5] for name in names]
    return {"customers": customers, "invoices": invoices or [1], "terms": terms, "total": total}


def request_mix(data: dict, count: int, rng: random.Random) -> list[tuple[str, str]]:
    """`count` requests (path, "api" or "staff") over the API lists and the staff pages, in random order."""
    pages = max(1, data["total"] // 50)

    def pick(items):
        return rng.choice(items)

    makers = [
        lambda: (f"/api/customers/?page={rng.randint(1, pages)}&page_size={pick([25, 50, 100])}"
                 f"&ordering={pick(['name', '-name', 'id', '-id', 'account_number'])}", "api"),
        lambda: (f"/api/customers/{pick(data['customers'])}/", "api"),
        lambda: (f"/api/billing/invoices/?status={pick(['open', 'overdue', 'paid'])}&page={rng.randint(1, 3)}",
                 "api"),
        lambda: (f"/api/billing/payments/?page={rng.randint(1, 3)}", "api"),
        lambda: ("/api/subscriptions/?page=1", "api"),
        lambda: ("/api/plans/", "api"),
        lambda: (f"/customers/?sort={pick(['name', 'account', 'newest', 'status'])}"
                 f"&status={pick(['', 'active', 'suspended'])}", "staff"),
        lambda: (f"/customers/?q={pick(data['terms'])}", "staff"),
        lambda: (f"/customers/{pick(data['customers'])}", "staff"),
        lambda: (f"/invoices/{pick(data['invoices'])}", "staff"),
        lambda: ("/", "staff"),
        lambda: ("/invoices/", "staff"),
        lambda: ("/payments/", "staff"),
        lambda: ("/plans/", "staff"),
        lambda: ("/reports/aging", "staff"),
        lambda: ("/health/ready/", "probe"),
    ]
    return [rng.choice(makers)() for _ in range(count)]


def drive(base: str, mix: list[tuple[str, str]], token: str, cookie: str, concurrency: int) -> collections.Counter:
    """Send the requests, `concurrency` at a time; return the count of each status (raise on any failure)."""
    import requests

    from bench.http_load import HTTPS

    headers = {"api": {**HTTPS, "Authorization": f"Bearer {token}", "Accept": "application/json"},
               "staff": {**HTTPS, "Cookie": cookie}, "probe": {}}

    def one(item):
        path, kind = item
        return requests.get(base + path, headers=headers[kind], allow_redirects=False, timeout=60).status_code

    with ThreadPoolExecutor(concurrency) as pool:
        statuses = list(pool.map(one, mix))
    failed = [(status, path) for status, (path, _kind) in zip(statuses, mix, strict=True) if status >= 400]
    if failed:
        raise RuntimeError(f"{len(failed)} requests failed: {failed[:10]}")
    return collections.Counter(statuses)


def real_workers(customers: int, requests_per_round: int, rounds: int, concurrency: int) -> dict:
    """Start gunicorn as deployed against a throwaway database; return the memory once ready and after each round."""
    from bench.http_load import served, sign_in

    rng = random.Random(1)
    with served(customers, "memory") as bench:
        time.sleep(1)  # both workers booted (readiness may have been answered by the first alone)
        snapshots = [{"label": "ready", **snapshot(bench.server.pid)}]
        cookie = sign_in(bench.base, bench.password)
        data = sample(bench.url, rng)
        for number in range(1, rounds + 1):
            try:
                statuses = drive(bench.base, request_mix(data, requests_per_round, rng), bench.loaded["token"],
                                 cookie, concurrency)
            except RuntimeError as exc:
                raise RuntimeError(f"round {number}: {exc}\n{bench.log.read_text()[-5000:]}") from None
            snapshots.append({"label": f"after {number * requests_per_round} requests",
                              **snapshot(bench.server.pid), "statuses": dict(statuses)})
    return {"customers": customers, "concurrency": concurrency, "snapshots": snapshots}


def report(fresh: dict, server: dict | None) -> None:
    """Print the figures."""
    plain = fresh["plain"]
    print(f"Fresh interpreter (APP_ENV=production): start {plain['start']:.1f} MB, after import "
          f"{plain['import']:.1f} MB, after create_app() {plain['create_app']:.1f} MB, {plain['modules']} modules")
    print("Watched modules loaded by create_app(): " +
          (", ".join(f"{k} ({v})" for k, v in plain["watched"].items()) or "none"))
    print("\nRSS added by each package's own imports (MB):")
    for name, mb in fresh["modules"]["packages"]:
        print(f"  {mb:6.1f}  {name}")
    print("\nCostliest single modules (MB):")
    for name, mb in fresh["modules"]["modules"]:
        print(f"  {mb:6.1f}  {name}")
    if server is None:
        return
    print(f"\ngunicorn (deploy/gunicorn.conf.py), {server['customers']:,} customers, {server['concurrency']} "
          f"requests at a time; MB:")
    for snap in server["snapshots"]:
        workers = "  ".join(f"rss {w['rss']:.1f} pss {w['pss']:.1f} uss {w['uss']:.1f}" for w in snap["workers"])
        master = snap["master"]
        print(f"  {snap['label']:<22} workers: {workers}   master: rss {master['rss']:.1f} pss {master['pss']:.1f}")
    final = server["snapshots"][-1]["workers"]
    most = max(w["rss"] for w in final)
    print(f"\nRSS per web worker after the run: max {most:.1f} MB (goal ≤ 80 MB: {'met' if most <= 80 else 'missed'})")


def main(argv=None) -> dict:
    """Measure and print; return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=400, help="requests per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--no-server", action="store_true", help="only the fresh-interpreter figures")
    parser.add_argument("--json", default="", help="also write the figures to this file")
    args = parser.parse_args(argv)
    figures = {"fresh": fresh_interpreter(args.top), "server": None}
    if not args.no_server:
        figures["server"] = real_workers(args.customers, args.requests, args.rounds, args.concurrency)
    report(figures["fresh"], figures["server"])
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()

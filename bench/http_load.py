"""HTTP load benchmark: the API and staff pages under wrk, as deployed, against a bare route on the same server.

Usage: .venv/bin/python bench/http_load.py [--customers 100000] [--duration 30] [--connections 16]
       [--peak-seconds 60] [--small] [--results bench/RESULTS.md]

1. Creates a throwaway PostgreSQL database next to BENCH_DATABASE_URL and a throwaway Redis on a free port,
   migrates, loads customers, subscriptions and two months of invoices and payments with
   `flask data generate-test-data --history-months 2` (two real billing runs, ~80% paid, the rest overdue);
   creates an admin with `flask users create` and a read token with `flask tokens create`, and signs in once.
2. The yardstick: a bare 5-line Flask app (bench/bare_app.py) on the same server and config
   (deploy/gunicorn.conf.py), measured before and after our app; every target is reported as a ratio to it.
3. Our app with the SHIPPED defaults (issue 17): APP_ENV=production behind `X-Forwarded-Proto: https` (as a TLS
   proxy sends it; HTTPS-only cookies, security headers), rate limits ON in Redis with the authenticated budget
   raised only as far as one client of this server can go (1.5 × the bare route's rate per minute), INFO request
   logs (JSON lines) written to a file, worker recycling as shipped. Then the same with the rate limiter off (and
   nothing else changed): the second column, and the limiter's cost per target.
4. Drives wrk (bench/wrk/load.lua) at each target for --duration seconds: random pages, sizes, orderings, filters,
   search terms and cursor walks, per request. Reports req/s, p50/p95/p99, errors (non-2xx/3xx, socket errors,
   timeouts), SQL queries per request (every response's Server-Timing), worker RSS (sampled every second: with
   recycling on, the largest any worker grew to) and the ratio to the bare route.
5. A --peak-seconds run at 1,000 connections on the API list with the shipped defaults (skipped with --small).
6. Appends a dated section to the results file: every figure beside its goal (issue 17).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import cpu_account, profile  # noqa: E402  (after the path insert above)
from bench.billing_run import commit_id, database, drop  # noqa: E402

LUA = ROOT / "bench" / "wrk" / "load.lua"
BARE_APP = "bench.bare_app:app"
TARGETS = ("health", "api_customers", "etag_304", "api_invoices", "staff_list", "staff_search", "customer_detail",
           "dashboard")
LABELS = {"health": "/health/", "api_customers": "API customers list (pages + cursor walks)",
          "etag_304": "API conditional GET (ETag → 304)", "api_invoices": "API invoices (status + due range)",
          "staff_list": "staff customer list", "staff_search": "staff customer search",
          "customer_detail": "staff customer detail", "dashboard": "dashboard", "bare": "bare Flask route"}
LIST_TARGETS = ("api_customers", "api_invoices", "staff_list", "staff_search")
ADMIN_EMAIL = "bench-admin@example.com"
HTTPS = {"X-Forwarded-Proto": "https"}


def ensure_wrk() -> str:
    """Return the wrk binary, installing Debian's package when it is missing (needs root)."""
    found = shutil.which("wrk")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        subprocess.run(sudo + command, check=False, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is not installed and apt-get could not install it (apt-get install wrk)")
    return found


def raise_open_files(wanted: int = 8192) -> int:
    """Raise this process's open-file limit (inherited by gunicorn and wrk) for the 1,000-connection run."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    """Return a TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    """Start a private Redis (no persistence) so the run never touches a shared one; return it and its URL."""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError("redis-server did not start")


def stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
    """Stop a process this script started, killing it if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def flask(env: dict, *args: str, stdin: str | None = None) -> str:
    """Run a `flask` command against the benchmark database and return its output."""
    done = subprocess.run([sys.executable, "-m", "flask", *args], cwd=ROOT, env=env, input=stdin, text=True,
                          capture_output=True)
    if done.returncode:
        raise RuntimeError(f"flask {' '.join(args[:2])} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def seed(env: dict, customers: int, password: str) -> dict:
    """Migrate, load data, create the admin and a read token; return the token and the load times."""
    flask(env, "db", "upgrade")
    started = time.perf_counter()
    out = flask(env, "data", "generate-test-data", "--customers", str(customers), "--seed", "1",
                "--history-months", "2")
    loaded = time.perf_counter()
    counts = re.search(r"(\d+) invoices and (\d+) payments .*billing history in ([\d.]+)s", out)
    if not counts:
        raise RuntimeError(f"generate-test-data did not report its invoices and payments:\n{out}")
    vacuum(env["DATABASE_URL"])
    # The password goes in on stdin (prompt and confirmation), never on a command line others can read.
    flask(env, "users", "create", "--email", ADMIN_EMAIL, "--role", "admin", "--name", "Bench Admin",
          stdin=f"{password}\n{password}\n")
    token = flask(env, "tokens", "create", "--email", ADMIN_EMAIL, "--name", "http-bench",
                  "--scopes", "read").strip().splitlines()[-1]
    history_s = float(counts[3])
    return {"token": token, "generate_s": loaded - started - history_s, "history_s": history_s,
            "history": {"invoices": int(counts[1]), "payments": int(counts[2])}}


def vacuum(url: str) -> None:
    """VACUUM ANALYZE the fresh data, as autovacuum would soon after a bulk load (the run measures a settled table)."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE"))
    engine.dispose()


def start_gunicorn(env: dict, port: int, log: Path, app: str = "wsgi:app") -> subprocess.Popen:
    """Start gunicorn with the deploy config, bound to 127.0.0.1:port."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", app],
                                cwd=ROOT, env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}"}, stdout=out,
                                stderr=subprocess.STDOUT)


def wait_ready(base: str, server: subprocess.Popen, log: Path, seconds: float = 60, path: str = "/health/ready/"
               ) -> None:
    """Wait until `path` (/health/ready/) answers 200."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{base}{path}", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn was not ready in {seconds}s:\n{log.read_text()[-3000:]}")


def sign_in(base: str, password: str) -> str:
    """Sign the admin in through the login form; return the Cookie header value of the session."""
    host = base.split("//", 1)[1]
    page = requests.get(f"{base}/login", headers=HTTPS, timeout=10)
    cookie = _session_cookie(page)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text)
    if not (cookie and csrf):
        raise RuntimeError(f"the login page gave no session or CSRF token (status {page.status_code})")
    # Flask-WTF checks the Referer on HTTPS requests (same host), as a browser would send it.
    answer = requests.post(f"{base}/login", data={"email": ADMIN_EMAIL, "password": password,
                                                  "csrf_token": csrf.group(1)},
                           headers={**HTTPS, "Cookie": cookie, "Referer": f"https://{host}/login"},
                           allow_redirects=False, timeout=10)
    signed_in = _session_cookie(answer)
    if answer.status_code != 302 or not signed_in:
        raise RuntimeError(f"sign-in failed (status {answer.status_code})")
    check = requests.get(f"{base}/customers/", headers={**HTTPS, "Cookie": signed_in}, allow_redirects=False,
                         timeout=30)
    if check.status_code != 200:
        raise RuntimeError(f"the session cookie does not open the customer list (status {check.status_code})")
    return signed_in


def _session_cookie(response: requests.Response) -> str | None:
    # Read Set-Cookie by hand: the cookie is Secure, and requests would not send it back over plain HTTP.
    match = re.search(r"((?:__Host-)?session=[^;]+)", response.headers.get("Set-Cookie", ""))
    return match.group(1) if match else None


def prepare(base: str, url: str, token: str, cookie: str, customers: int, rng: random.Random) -> dict:
    """Sample what the Lua script picks from: ids, search terms, the due-date range and ETags of some pages."""
    engine = create_engine(url)
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(text("SELECT id FROM customers ORDER BY random() LIMIT 2000"))]
        names = conn.execute(text("SELECT name, account_number, email FROM customers ORDER BY random() LIMIT 400"))
        first, last = conn.execute(text("SELECT min(due_date), max(due_date) FROM invoices")).one()
        total = conn.execute(text("SELECT count(*) FROM customers")).scalar()
    engine.dispose()
    terms: list[str] = []
    for name, account, email in names:
        word = rng.choice(name.split())
        terms += [word[: rng.randint(3, max(3, len(word)))], account[-rng.randint(4, 6):]]
        if email:
            terms.append(email.split("@")[0][:6])
    first = first or date.today()
    span = max(0, ((last or first) - first).days)
    etags = []
    for page in rng.sample(range(1, max(2, total // 50) + 1), min(20, max(1, total // 50))):
        path = f"/api/customers/?page={page}"
        answer = requests.get(base + path, headers={**HTTPS, "Authorization": f"Bearer {token}"},
                              allow_redirects=False, timeout=30)
        if answer.status_code == 200 and answer.headers.get("ETag"):
            etags.append({"path": path, "etag": answer.headers["ETag"]})
    if not etags:
        raise RuntimeError("the API list gave no ETag")
    return {"token": token, "cookie": cookie, "customers": total, "ids": ids,
            "terms": [t.replace(" ", "+") for t in terms if t.strip()],
            "invoice_statuses": ["open", "overdue", "paid"], "due_span": span,
            "due_dates": [(first + timedelta(days=d)).isoformat() for d in range(span + 1)], "etags": etags}


def lua_literal(value) -> str:
    """Render a JSON-like value as a Lua literal."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{json.dumps(k)}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def run_wrk(wrk: str, base: str, target: str, data_file: Path, seconds: int, connections: int,
            timeout: str) -> dict:
    """Run wrk at one target; return its figures (latencies in ms)."""
    threads = max(1, min(2, connections))
    command = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", timeout,
               "-s", str(LUA), base]
    env = {**os.environ, "BENCH_TARGET": target, "BENCH_DATA": str(data_file)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=seconds + 120)
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if done.returncode or line is None:
        raise RuntimeError(f"wrk failed at {target}:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line.removeprefix("BENCH_RESULT "))
    statuses = {int(k): v for k, v in raw["statuses"].items()}
    socket_errors = raw["connect"] + raw["read"] + raw["write"]
    duration = raw["duration_us"] / 1e6
    return {
        "target": target, "seconds": round(duration, 2), "connections": connections, "requests": raw["requests"],
        "rps": raw["requests"] / duration if duration else 0.0,
        "p50_ms": raw["p50_us"] / 1000, "p95_ms": raw["p95_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "max_ms": (raw["max_us"] or 0) / 1000,
        "non_2xx_3xx": raw["status"], "socket_errors": socket_errors, "timeouts": raw["timeout"],
        "errors": raw["status"] + socket_errors + raw["timeout"], "statuses": statuses,
        "queries_mean": raw["queries_sum"] / raw["queries_counted"] if raw["queries_counted"] else None,
        "queries_max": raw["queries_max"] if raw["queries_counted"] else None,
        "queries_counted": raw["queries_counted"],
    }


def worker_pids(master: int) -> list[int]:
    """Return the pids of gunicorn `master`'s workers."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def worker_rss(master: int) -> list[float]:
    """Return the resident memory (MB) of each gunicorn worker of `master`."""
    out = subprocess.run(["ps", "-o", "rss=", "--ppid", str(master)], capture_output=True, text=True).stdout
    return [int(x) / 1024 for x in out.split()]


def server_env(url: str, redis_url: str) -> dict:
    """The environment of the flask commands, and of gunicorn as the earlier runs measured it: rate limits off,
    WARNING logs, no worker recycling."""
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "FLASK_APP": "wsgi.py",
           "APP_ENV": "production", "PUBLIC_URL": "https://isp.example.com", "SECRET_KEY": secrets.token_hex(32),
           "LOG_LEVEL": "WARNING",
           "GUNICORN_LOG_LEVEL": "warning", "RATELIMIT_ENABLED": "false", "PROXY_FIX_X_FOR": "1",
           "RQ_QUEUE": f"http_bench_{os.getpid()}", "GUNICORN_MAX_REQUESTS": "0"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the config makes (and removes) a private one
    return env


def shipped_env(env: dict, per_minute: int) -> dict:
    """`env` with what a deployment runs: limits on (the authenticated budget raised to `per_minute`, what one
    client of this server can spend), INFO logs, worker recycling as shipped (deploy/gunicorn.conf.py's)."""
    out = {**env, "RATELIMIT_ENABLED": "true", "RATE_LIMIT_AUTHENTICATED": f"{per_minute}/minute",
           "LOG_LEVEL": "INFO", "GUNICORN_LOG_LEVEL": "info"}
    out.pop("GUNICORN_MAX_REQUESTS", None)
    return out


class RssSampler:
    """Sample the workers' RSS every second while a server runs: with recycling on, the largest any worker grew
    to is seen only while it lives."""

    def __init__(self, master: int):
        import threading

        self.master, self.peak, self._stop = master, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.peak = max([self.peak, *worker_rss(self.master)])

    def stop(self) -> float:
        """Stop sampling; return the largest RSS (MB) any worker had."""
        self._stop.set()
        self._thread.join()
        return max([self.peak, *worker_rss(self.master)])


@dataclass
class Seeded:
    """A benchmark's database and Redis, seeded (and the admin's password), and the server environment."""

    url: str
    env: dict
    workdir: Path
    loaded: dict
    password: str


@dataclass
class Served(Seeded):
    """A seeded benchmark with gunicorn running on it."""

    base: str = ""
    server: subprocess.Popen | None = None
    log: Path | None = None


@contextmanager
def seeded(customers: int, purpose: str, keep: bool = False) -> Iterator[Seeded]:
    """Create and seed a throwaway database and start a private Redis; clean up after."""
    name = f"isp_bench_{purpose}_{os.getpid()}"
    workdir = Path(tempfile.mkdtemp(prefix=f"isp-{purpose}-bench-"))
    password = secrets.token_urlsafe(18)
    url = database(name)
    redis_proc = None
    try:
        redis_proc, redis_url = start_redis(workdir)
        env = server_env(url, redis_url)
        loaded = seed(env, customers, password)
        yield Seeded(url, env, workdir, loaded, password)
    finally:
        stop(redis_proc)
        if not keep:
            drop(name)
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def running(env: dict, workdir: Path, name: str, app: str = "wsgi:app") -> Iterator[tuple[str, subprocess.Popen, Path]]:
    """Run gunicorn with the deploy config and `env` on a free port; yield its base URL, process and log file."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = workdir / f"{name}.log"
    server = start_gunicorn(env, port, log, app)
    try:
        wait_ready(base, server, log, path="/health/ready/" if app == "wsgi:app" else "/")
        yield base, server, log
    finally:
        workers = worker_pids(server.pid) if server.poll() is None else []
        stop(server)
        stop_workers(workers)


def stop_workers(pids: list[int], timeout: float = 30.0) -> None:
    """Wait until a stopped server's workers are gone, killing any left: a worker still serving what it had
    accepted (after the peak run, hundreds of requests) would take the cores from the next server's first target."""
    import psutil

    alive = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            alive.append(psutil.Process(pid))
    _, left = psutil.wait_procs(alive, timeout=timeout)
    for process in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(left, timeout=5)


@contextmanager
def served(customers: int, purpose: str, keep: bool = False) -> Iterator[Served]:
    """Create and seed a throwaway database, start a private Redis and gunicorn (limits off); clean up after."""
    with seeded(customers, purpose, keep) as data, running(data.env, data.workdir, "gunicorn") as (base, server, log):
        yield Served(data.url, data.env, data.workdir, data.loaded, data.password, base, server, log)


def main(argv=None) -> dict:
    """Run the benchmark and report its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--duration", type=int, default=30, help="seconds per target")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--peak-seconds", type=int, default=60, help="the 1,000-connection run; 0 skips it")
    parser.add_argument("--peak-connections", type=int, default=1000)
    parser.add_argument("--timeout", default="2s", help="wrk's per-request timeout (its default)")
    parser.add_argument("--small", action="store_true",
                        help="CI size: 300 customers, 2 s per target, 4 connections, no peak run")
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="'' to write nothing")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--profile", action="store_true",
                        help="sample the workers with py-spy during each target; where the time goes, per layer")
    parser.add_argument("--no-limits-off", action="store_true", help="skip the second pass (limits off)")
    args = parser.parse_args(argv)
    if args.small:
        args.customers, args.duration, args.connections, args.peak_seconds = 300, 2, 4, 0

    wrk = ensure_wrk()
    open_files = raise_open_files()
    rng = random.Random(1)

    def measure(base: str, server: subprocess.Popen, target: str, data_file: Path) -> dict:
        account = cpu_account.CpuAccount(server.pid)
        before = account.snapshot()
        figures = run_wrk(wrk, base, target, data_file, args.duration, args.connections, args.timeout)
        figures["cpu"] = cpu_account.per_request(before, account.snapshot(), figures["requests"])
        print(_line(figures), flush=True)
        return figures

    with seeded(args.customers, "http", keep=args.keep) as bench:
        workdir = bench.workdir
        data_file = workdir / "data.lua"
        data_file.write_text('return { token = "" }\n')   # the bare route reads nothing
        # The yardstick before and after our app (their mean is the ratio's base): drift shows as a gap.
        with running(bench.env, workdir, "bare-before", BARE_APP) as (base, server, _):
            bare = [measure(base, server, "bare", data_file)]
        per_minute = max(1000, int(bare[0]["rps"] * 60 * 1.5))
        passes: dict[str, dict] = {}
        rss: dict[str, float] = {}
        peak = None
        data = None
        shipped = shipped_env(bench.env, per_minute)
        # The second pass differs in the limiter alone, so its req/s against the first is the limiter's cost.
        for mode, env in (("shipped", shipped), ("limits_off", {**shipped, "RATELIMIT_ENABLED": "false"})):
            if mode == "limits_off" and args.no_limits_off:
                continue
            with running(env, workdir, mode) as (base, server, _):
                if data is None:
                    cookie = sign_in(base, bench.password)
                    data = prepare(base, bench.url, bench.loaded["token"], cookie, args.customers, rng)
                    data_file.write_text("return " + lua_literal(data) + "\n")
                sampler = RssSampler(server.pid)
                results = {}
                for target in TARGETS:
                    samplers = None
                    if args.profile and mode == "shipped":  # py-spy samples both workers from outside
                        samplers = profile.record(worker_pids(server.pid), max(1, args.duration - 1),
                                                  workdir / f"profile-{target}", rate=PROFILE_RATE)
                    results[target] = measure(base, server, target, data_file)
                    if samplers:
                        profile.finish(samplers, timeout=60)
                        results[target]["profile"] = profile.summarize(workdir / f"profile-{target}")
                if mode == "shipped" and args.peak_seconds:
                    peak = run_wrk(wrk, base, "api_customers", data_file, args.peak_seconds, args.peak_connections,
                                   args.timeout)
                    print("peak " + _line(peak), flush=True)
                rss[mode] = sampler.stop()
                passes[mode] = results
        with running(bench.env, workdir, "bare-after", BARE_APP) as (base, server, _):
            bare.append(measure(base, server, "bare", data_file))
            bare_rss = max(worker_rss(server.pid), default=0.0)
        loaded = bench.loaded

    yardstick = sum(b["rps"] for b in bare) / len(bare)
    for results in passes.values():
        for figures in results.values():
            figures["ratio"] = figures["rps"] / yardstick if yardstick else 0.0
    off = passes.get("limits_off", {})
    for key, figures in passes["shipped"].items():
        if key in off and off[key]["rps"]:
            figures["limiter_cost"] = max(0.0, 1 - figures["rps"] / off[key]["rps"])
    report = {
        "date": date.today().isoformat(), "commit": commit_id(), "cores": os.cpu_count(),
        "machine": platform.machine(), "customers": data["customers"], "duration": args.duration,
        "connections": args.connections, "open_files": open_files, "timeout": args.timeout,
        "generate_s": loaded["generate_s"], "history_s": loaded["history_s"], "history": loaded["history"],
        "bare": bare, "yardstick_rps": yardstick, "bare_rss_mb": bare_rss, "per_minute": per_minute,
        "targets": passes["shipped"], "limits_off": off, "worker_rss_mb": rss.get("shipped", 0.0),
        "worker_rss_limits_off_mb": rss.get("limits_off"), "peak": peak,
    }
    report["goals"] = goals(report)
    print(json.dumps({k: v for k, v in report.items() if k not in ("targets", "limits_off")}, indent=2, default=str))
    if args.results:
        write_section(Path(args.results), report)
    return report


def _line(f: dict) -> str:
    queries = f"{f['queries_mean']:.1f} (max {f['queries_max']})" if f["queries_counted"] else "—"
    return (f"{f['target']:<16} {f['rps']:8.1f} req/s  p50 {f['p50_ms']:7.1f}  p95 {f['p95_ms']:7.1f}  "
            f"p99 {f['p99_ms']:7.1f} ms  errors {f['errors']} (socket {f['socket_errors']}, timeouts "
            f"{f['timeouts']})  queries {queries}  statuses {f['statuses']}")


PROFILE_RATE = 100  # py-spy samples per second per worker: ~6,000 a target, at a cost inside the run's noise

# Issue 17's goals, as shares of the bare route's req/s in the same run (and p95 where it names one).
RATIO_GOALS = {"health": (0.60, None), "api_customers": (0.15, 30), "etag_304": (0.40, None),
               "staff_list": (0.08, 60), "staff_search": (0.08, 60)}
LIMITER_GOAL = 0.10
RSS_GOAL_MB = 80


def limiter_share(figures: dict) -> float | None:
    """The limiter's share of a target's whole CPU per request: the workers' CPU on its stacks (py-spy, inclusive)
    plus all of Redis's CPU (the limiter is its main user), over every process's CPU; None without both."""
    cpu, sampled = figures.get("cpu"), figures.get("profile")
    if not cpu or not sampled or not sampled.get("samples") or not cpu["total_ms"]:
        return None
    spent = sampled["inclusive"][profile.LIMITER] * cpu["ms"]["app"] + cpu["ms"]["redis"]
    return spent / cpu["total_ms"]


def goals(r: dict) -> list[dict]:
    """Return every goal of issue 17 beside what was measured: figure, measured, goal, met (None: not measured)."""
    t, rows = r["targets"], []

    def row(figure: str, measured, goal: str, met) -> None:
        rows.append({"figure": figure, "measured": measured, "goal": goal, "met": met})

    for key, (share, p95) in RATIO_GOALS.items():
        f = t[key]
        extra = f", {f['statuses'].get(304, 0) / max(f['requests'], 1):.0%} were 304" if key == "etag_304" else ""
        row(f"{LABELS[key]} ÷ bare route", f"{f['ratio']:.1%} ({f['rps']:,.0f} req/s{extra})", f"≥ {share:.0%}",
            f["ratio"] >= share)
        if p95 is not None:
            row(f"{LABELS[key]} p95", f"{f['p95_ms']:.1f} ms", f"≤ {p95} ms", f["p95_ms"] <= p95)
    costs = {key: f["limiter_cost"] for key, f in t.items() if "limiter_cost" in f}
    if costs:
        worst = max(costs, key=costs.get)
        row("rate limiter's cost (1 − req/s limits on ÷ off), worst target",
            f"{costs[worst]:.1%} ({LABELS[worst]})", f"≤ {LIMITER_GOAL:.0%}", costs[worst] <= LIMITER_GOAL)
    else:
        row("rate limiter's cost", "not measured (--no-limits-off)", f"≤ {LIMITER_GOAL:.0%}", None)
    measured = {key: limiter_share(f) for key, f in t.items() if limiter_share(f) is not None}
    if measured:
        worst = max(measured, key=measured.get)
        row("rate limiter's cost, profiled (its share of the workers' CPU, py-spy, plus Redis's CPU, of the "
            "request's whole CPU), worst target", f"{measured[worst]:.1%} ({LABELS[worst]})",
            f"≤ {LIMITER_GOAL:.0%}", measured[worst] <= LIMITER_GOAL)
    for key in LIST_TARGETS:
        most = t[key]["queries_max"]
        row(f"SQL queries per request, {LABELS[key]}", f"max {most}, mean {t[key]['queries_mean'] or 0:.2f} "
            f"({t[key]['queries_counted']:,} responses)", "≤ 3", None if most is None else most <= 3)
    row("RSS per web worker (largest sampled, shipped defaults)", f"{r['worker_rss_mb']:.0f} MB "
        f"(bare app's workers: {r['bare_rss_mb']:.0f} MB)", f"≤ {RSS_GOAL_MB} MB", r["worker_rss_mb"] <= RSS_GOAL_MB)
    peak = r["peak"]
    if peak:
        row(f"peak: {peak['connections']:,} connections × {peak['seconds']:.0f} s, errors",
            f"{peak['non_2xx_3xx'] + peak['socket_errors']} (non-2xx/3xx {peak['non_2xx_3xx']}, "
            f"socket {peak['socket_errors']})", "0", peak["errors"] - peak["timeouts"] == 0)
        row("peak: timeouts", f"{peak['timeouts']} (wrk --timeout {r['timeout']})", "0", peak["timeouts"] == 0)
        row("peak: p95", f"{peak['p95_ms']:.0f} ms ({peak['rps']:,.0f} req/s)", "reported", True)
    else:
        row("peak: 1,000 connections × 60 s", "not run", "0 errors, 0 timeouts", None)
    return rows


def write_section(path: Path, r: dict) -> None:
    """Append a dated section with the per-target table and the goals table to the results file."""
    mark = {True: "met", False: "**missed**", None: "not measured"}
    bare = " and ".join(f"{b['rps']:,.0f}" for b in r["bare"])
    lines = [f"\n## HTTP load as deployed (bench/http_load.py), {r['date']}, commit {r['commit']}, {r['cores']} "
             f"cores ({r['machine']})\n",
             f"{r['customers']:,} customers with subscriptions, invoices and payments (two billing runs: "
             f"{r['history'].get('invoices', 0):,} invoices, {r['history'].get('payments', 0):,} payments); "
             f"gunicorn with deploy/gunicorn.conf.py, APP_ENV=production behind `X-Forwarded-Proto: https`; "
             f"wrk {r['connections']} connections, {r['duration']} s per target; app, PostgreSQL, Redis and wrk "
             f"on the same {r['cores']} cores. **Shipped defaults**: rate limits on in Redis (authenticated "
             f"budget {r['per_minute']:,}/minute, 1.5 × what one client of the bare route can send), INFO JSON "
             f"request logs to a file, worker recycling as shipped. **Limits off**: the same with the rate limiter "
             f"off, nothing else changed. The bare route (bench/bare_app.py, same server and config) gave "
             f"{bare} req/s before and after; ratios are to their mean, {r['yardstick_rps']:,.0f} req/s.\n",
             "| target | req/s | p50 ms | p95 ms | p99 ms | errors | SQL/request (mean, max) | ÷ bare | "
             "limits off: req/s | p95 ms | ÷ bare | limiter's cost |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    b = r["bare"][0]
    lines.append(f"| {LABELS['bare']} | {r['yardstick_rps']:,.0f} | {b['p50_ms']:.1f} | {b['p95_ms']:.1f} | "
                 f"{b['p99_ms']:.1f} | {sum(x['errors'] for x in r['bare'])} | — | 100% | – | – | – | – |")
    for key, f in r["targets"].items():
        queries = f"{f['queries_mean']:.2f}, {f['queries_max']}" if f["queries_counted"] else "—"
        o = r["limits_off"].get(key)
        off = (f"{o['rps']:,.0f} | {o['p95_ms']:.1f} | {o['ratio']:.1%} | {f['limiter_cost']:.1%}" if o
               else "– | – | – | –")
        lines.append(f"| {LABELS[key]} | {f['rps']:,.0f} | {f['p50_ms']:.1f} | {f['p95_ms']:.1f} | "
                     f"{f['p99_ms']:.1f} | {f['errors']} | {queries} | {f['ratio']:.1%} | {off} |")
    lines += ["", "| figure | measured | goal | |", "|---|---|---|---|"]
    lines += [f"| {g['figure']} | {g['measured']} | {g['goal']} | {mark[g['met']]} |" for g in r["goals"]]
    accounted = [(f"{LABELS['bare']} ({when})", b["rps"], b["cpu"])
                 for when, b in zip(("before", "after"), r["bare"], strict=True) if b.get("cpu")]
    accounted += [(LABELS[key], f["rps"], f["cpu"]) for key, f in r["targets"].items() if f.get("cpu")]
    if accounted:
        lines += ["", "CPU per request, by process (ms of CPU time per request served, shipped defaults; every",
                  "process shares the same cores, so a target's req/s is set by its whole column \"all\", not by the",
                  "app's alone):",
                  "", *cpu_account.markdown(accounted)]
    profiled = [(key, f["profile"]) for key, f in r["targets"].items() if f.get("profile")]
    if profiled:
        lines += ["", "Where the time goes (py-spy `--gil`: both workers sampled through each target's run, only the",
                  "thread holding the GIL, so this is the workers' CPU time, not their waits; a sample counts for the",
                  "layer of its innermost frame):", ""]
        for key, summary in profiled:
            lines += profile.markdown(LABELS[key], summary)
    text_ = path.read_text() if path.exists() else "# Benchmark results\n"
    path.write_text(text_ + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark FreeRADIUS authenticating PPPoE logins against the panel's RADIUS views.

Usage: .venv/bin/python bench/radius_auth.py [--subscriptions 100000] [--requests 20000] [--concurrency 1,16,64,256]
       [--results bench/RESULTS.md] [--json bench/results/radius_auth.json] [--keep]

Creates a throwaway PostgreSQL database next to BENCH_DATABASE_URL, migrates it to head with the app and loads
plans, customers, subscriptions (active, suspended for non-payment, suspended manually, cancelled; every tenth with
a static IP) and their PPPoE passwords set-based, then VACUUM ANALYZE. Captures EXPLAIN ANALYZE of the queries
FreeRADIUS sends and fails unless the per-user ones find the login through uq_subscriptions_pppoe_live. Starts a
real FreeRADIUS with the shipped config (tests/support/radius.py) and, per concurrency level, sends PAP
Access-Requests for random logins with that many outstanding (one UDP socket each, pre-built packets, one selector
loop). Every answer is checked against billing: the plan's rate and static IP, the walled garden, or a reject.
Reports authentications/s, latency p50/p95/p99 and where the CPU went; writes JSON and appends to the results file.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import re
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psutil
from pyrad import packet
from pyrad.dictionary import Dictionary
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.billing_run import commit_id, database, drop, say  # noqa: E402
from tests.support import radius  # noqa: E402

INDEX = "uq_subscriptions_pppoe_live"
TITLE = "## RADIUS authentication (bench/radius_auth.py)"
WARM_UP = 500  # requests per level before timing: the rlm_sql pool grows and PostgreSQL's caches fill
TIMEOUT_S = 5.0

# Deterministic mix per customer id (a multiplicative hash, so neighbours differ): 85% active, 8% suspended for
# non-payment (walled garden), 4% suspended manually (reject), 3% cancelled (no rows: reject); every tenth
# subscription has a static IP from 100.64.0.0/10, whatever its state.
LOAD = [
    """INSERT INTO plans (code, name, download_mbps, upload_mbps, monthly_price_cents, setup_fee_cents, tax_rate_bp,
                          currency, active, created_at, updated_at)
       SELECT 'HOME' || n * 25, 'Home ' || n * 25, n * 25, n * 5, 1000 + n * 500, 0, 0, 'USD', true, now(), now()
       FROM generate_series(1, 8) n""",
    # Half the plans carry an extra reply attribute, so the radgroupreply view's plan-attribute branch has rows.
    """INSERT INTO plan_radius_attributes (plan_id, kind, attribute, op, value)
       SELECT id, 'reply', 'Idle-Timeout', ':=', '600' FROM plans WHERE id % 2 = 0""",
    """INSERT INTO customers (account_number, name, email, status, created_at, updated_at)
       SELECT 'R' || lpad(n::text, 9, '0'), 'Customer ' || n, 'c' || n || '@example.net', 'active', now(), now()
       FROM generate_series(1, :n) n""",
    """WITH p AS (SELECT array_agg(id ORDER BY id) AS ids FROM plans),
            c AS (SELECT id, (id * 7919) % 100 AS bucket FROM customers)
       INSERT INTO subscriptions (customer_id, plan_id, status, suspension_reason, start_date, billing_day,
                                  next_bill_date, pppoe_username, static_ip, created_at, updated_at)
       SELECT c.id, p.ids[1 + (c.id * 31) % array_length(p.ids, 1)],
              CASE WHEN bucket < 85 THEN 'active' WHEN bucket < 97 THEN 'suspended' ELSE 'cancelled' END,
              CASE WHEN bucket BETWEEN 85 AND 92 THEN 'non_payment' WHEN bucket BETWEEN 93 AND 96 THEN 'manual' END,
              DATE '2026-01-01', 1, DATE '2027-01-01', 'ppp' || lpad(c.id::text, 7, '0'),
              CASE WHEN c.id % 10 = 0
                   THEN '100.' || (64 + c.id / 65536) || '.' || (c.id / 256 % 256) || '.' || (c.id % 256) END,
              now(), now()
       FROM c, p""",
    """INSERT INTO network_credentials (subscription_id, password, created_at, rotated_at)
       SELECT id, substr(md5('bench-' || id), 1, 12), now(), now() FROM subscriptions""",
]
LOGINS = """
    SELECT s.pppoe_username, c.password, s.status, pol.action, s.static_ip,
           p.upload_mbps || 'M/' || p.download_mbps || 'M' AS rate, p.code
    FROM subscriptions s JOIN network_credentials c ON c.subscription_id = s.id JOIN plans p ON p.id = s.plan_id
         LEFT JOIN network_policies pol ON pol.reason = s.suspension_reason
    ORDER BY s.id"""
# What rlm_sql sends per Access-Request (deploy/freeradius/sql's per-user lookups, compared lower-cased; Debian's
# postgresql/queries.conf for the groups), with the login's name pasted in.
QUERIES = {
    "radcheck": "SELECT id, UserName, Attribute, Value, Op FROM radcheck WHERE LOWER(UserName) = LOWER('{user}') "
                "ORDER BY id",
    "radusergroup": "SELECT GroupName FROM radusergroup WHERE LOWER(UserName) = LOWER('{user}') ORDER BY priority",
    "radgroupcheck": "SELECT id, GroupName, Attribute, Value, op FROM radgroupcheck WHERE GroupName = '{group}' "
                     "ORDER BY id",
    "radgroupreply": "SELECT id, GroupName, Attribute, Value, op FROM radgroupreply WHERE GroupName = '{group}' "
                     "ORDER BY id",
    "radreply": "SELECT id, UserName, Attribute, Value, Op FROM radreply WHERE LOWER(UserName) = LOWER('{user}') "
                "ORDER BY id",
}
PER_USER = ("radcheck", "radusergroup", "radreply")
# Debian's post-auth query, as sent for an accepted PAP login (the trigger blanks `pass`).
POSTAUTH = ("INSERT INTO radpostauth (username, pass, reply, authdate) "
            "VALUES ('{user}', 'typed-password', 'Access-Accept', '2026-12-05 11:00:00.123')")
COST_SAMPLES = 2000  # executions per query when timing a backend's CPU


@dataclass(frozen=True)
class Login:
    """A PPPoE login and what billing says the network must answer for it."""

    username: str
    password: str
    expect: str  # "service" | "walled_garden" | "reject"
    rate: str
    static_ip: str | None
    plan: str


def migrate(url: str) -> None:
    """Bring the database to the migrations' head with the app, as `flask db upgrade` does."""
    from flask_migrate import upgrade

    from isp_admin import create_app
    from isp_admin.extensions import db

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "LOG_LEVEL": "WARNING"})
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"))
        db.engine.dispose()


def load(url: str, subscriptions: int) -> tuple[float, dict]:
    """Load the subscriptions set-based, VACUUM ANALYZE; return the seconds taken and the counts by state."""
    engine = create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        for statement in LOAD:
            conn.execute(text(statement), {"n": subscriptions})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # What autovacuum does within minutes of a bulk load: planner statistics and the visibility map.
        conn.execute(text("VACUUM ANALYZE"))
        counts = dict(conn.execute(text(
            "SELECT coalesce(suspension_reason, status), count(*) FROM subscriptions GROUP BY 1")).all())
        counts["static_ip"] = conn.scalar(text("SELECT count(*) FROM subscriptions WHERE static_ip IS NOT NULL"))
    engine.dispose()
    return time.perf_counter() - started, counts


def read_logins(url: str) -> list[Login]:
    """Every login with its expected answer, worked out independently of the views."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text(LOGINS)).all()
    engine.dispose()
    logins = []
    for username, password, status, action, static_ip, rate, plan in rows:
        expect = ("service" if status == "active"
                  else "walled_garden" if status == "suspended" and action == "walled_garden" else "reject")
        logins.append(Login(username, password, expect, rate, static_ip, plan))
    return logins


def _scans(node: dict) -> list[str]:
    """The scan nodes of a JSON plan: 'Index Scan uq_… (subscriptions)', 'Seq Scan (plans)'."""
    found = []
    if "Scan" in node["Node Type"]:
        index = f" {node['Index Name']}" if node.get("Index Name") else ""
        found.append(f"{node['Node Type']}{index} ({node.get('Relation Name', '?')})")
    for child in node.get("Plans", []):
        found += _scans(child)
    return found


def explain(url: str, logins: list[Login]) -> dict:
    """EXPLAIN ANALYZE FreeRADIUS's queries for an active login with a static IP; fail if a per-user one misses
    the login index."""
    login = next(x for x in logins if x.expect == "service" and x.static_ip)
    values = {"user": login.username, "group": f"plan-{login.plan}"}
    engine = create_engine(url)
    report = {}
    with engine.connect() as conn:
        for name, query in QUERIES.items():
            sql = query.format(**values)
            for _ in range(3):  # warm: a backend's first planning of a view reads the catalogue
                conn.execute(text(sql)).all()
            plan = conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}")).scalar()[0]
            readable = conn.execute(text(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")).scalars().all()
            scans = _scans(plan["Plan"])
            report[name] = {"sql": sql, "scans": scans, "execution_ms": plan["Execution Time"],
                            "planning_ms": plan["Planning Time"], "rows": plan["Plan"]["Actual Rows"],
                            "plan": "\n".join(readable)}
        conn.rollback()
    engine.dispose()
    for name in PER_USER:
        scans = report[name]["scans"]
        report[name]["uses_login_index"] = (any(INDEX in s for s in scans)
                                            and not any(s.startswith("Seq Scan") and "(subscriptions)" in s
                                                        for s in scans))
    return report


def query_costs(url: str, logins: list[Login], rng: random.Random, samples: int = COST_SAMPLES) -> dict:
    """A backend's CPU per statement FreeRADIUS sends (µs), each run `samples` times for random active logins.

    One connection in autocommit, statements as literal SQL (rlm_sql sends them so: parsed and planned each time).
    """
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    active = [x for x in logins if x.expect == "service"]
    statements = {**QUERIES, "radpostauth (insert)": POSTAUTH}
    costs = {}
    with engine.connect() as conn:
        backend = psutil.Process(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar())
        for name, query in statements.items():
            chosen = [rng.choice(active) for _ in range(samples)]
            sqls = [query.format(user=x.username, group=f"plan-{x.plan}") for x in chosen]
            for sql in sqls[:20]:
                conn.exec_driver_sql(sql)
            cpu, wall = backend.cpu_times(), time.perf_counter()
            for sql in sqls:
                conn.exec_driver_sql(sql)
            wall, after = time.perf_counter() - wall, backend.cpu_times()
            costs[name] = {"backend_cpu_us": ((after.user + after.system) - (cpu.user + cpu.system)) / samples * 1e6,
                           "round_trip_us": wall / samples * 1e6}
    engine.dispose()
    return costs


def build(logins: list[Login], total: int, slots: int, rng: random.Random, dictionary: Dictionary) -> list[list]:
    """Pre-built Access-Requests, one queue per socket: (raw packet, its authenticator, login index)."""
    queues = []
    for _ in range(slots):
        queue = []
        for k in range(max(1, total // slots)):
            index = rng.randrange(len(logins))
            login = logins[index]
            request = packet.AuthPacket(id=k % 256, secret=radius.SECRET, dict=dictionary, User_Name=login.username)
            request["NAS-IP-Address"] = "127.0.0.1"
            request["Service-Type"] = "Framed-User"
            request["Framed-Protocol"] = "PPP"
            request["Calling-Station-Id"] = f"02:00:00:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:{index & 255:02x}"
            request["User-Password"] = request.PwCrypt(login.password)
            request.add_message_authenticator()
            queue.append((request.RequestPacket(), request.authenticator, index))
        queues.append(queue)
    return queues


class Slot:
    """One UDP socket with at most one request outstanding."""

    def __init__(self, port: int, queue: list):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.queue = queue
        self.next = 0
        self.current = None
        self.sent_at = 0.0

    def send_next(self) -> bool:
        """Send the next request; False when the queue is done."""
        if self.next >= len(self.queue):
            self.current = None
            return False
        self.current = self.queue[self.next]
        self.next += 1
        self.sent_at = time.perf_counter()
        self.sock.send(self.current[0])
        return True


def drive(port: int, queues: list[list]) -> dict:
    """Send every queue's requests, one outstanding per socket; return latencies, answers, timeouts, seconds."""
    selector = selectors.DefaultSelector()
    slots = [Slot(port, queue) for queue in queues]
    for slot in slots:
        selector.register(slot.sock, selectors.EVENT_READ, slot)
    latencies, answers, timeouts = [], [], 0
    started = time.perf_counter()
    running = sum(slot.send_next() for slot in slots)
    check_at = started + 0.1
    while running:
        for key, _ in selector.select(0.05):
            slot = key.data
            try:
                data = slot.sock.recv(4096)
            except (BlockingIOError, ConnectionRefusedError):
                continue
            if slot.current is None or len(data) < 20 or data[1] != slot.current[0][1]:
                continue  # an answer to a request already given up on
            latencies.append(time.perf_counter() - slot.sent_at)
            answers.append((slot.current, data))
            running -= not slot.send_next()
        now = time.perf_counter()
        if now >= check_at:
            for slot in slots:
                if slot.current is not None and now - slot.sent_at > TIMEOUT_S:
                    timeouts += 1
                    running -= not slot.send_next()
            check_at = now + 0.1
    seconds = time.perf_counter() - started
    for slot in slots:
        selector.unregister(slot.sock)
        slot.sock.close()
    return {"latencies": latencies, "answers": answers, "timeouts": timeouts, "seconds": seconds}


def wrong_answer(login: Login, authenticator: bytes, raw: bytes, dictionary: Dictionary) -> str | None:
    """Why an answer disagrees with billing (or is not from our server), or None when it is right."""
    if hashlib.md5(raw[:4] + authenticator + raw[20:] + radius.SECRET).digest() != raw[4:20]:
        return "bad response authenticator"
    reply = packet.AuthPacket(packet=raw, dict=dictionary, secret=radius.SECRET)

    def first(name):
        return reply[name][0] if name in reply else None

    if login.expect == "reject":
        return None if reply.code == packet.AccessReject else f"code {reply.code}, expected a reject"
    if reply.code != packet.AccessAccept:
        return f"code {reply.code}, expected an accept ({login.expect})"
    if login.expect == "walled_garden":
        ok = first("Framed-Pool") == "walled-garden" and first("Framed-IP-Address") is None
        return None if ok else f"walled garden expected, got {dict(reply)}"
    ok = first("Mikrotik-Rate-Limit") == login.rate and first("Framed-IP-Address") == login.static_ip
    return None if ok else f"rate {login.rate} ip {login.static_ip} expected, got {dict(reply)}"


def percentile(ordered: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))] if ordered else 0.0


def cpu_by_process(freeradius_pid: int, database_name: str) -> dict[str, dict[int, float]]:
    """CPU seconds so far of FreeRADIUS and of the benchmark database's PostgreSQL backends, by pid."""
    seen = {"freeradius": {}, "postgresql": {}}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
            kind = ("freeradius" if proc.info["pid"] == freeradius_pid
                    else "postgresql" if cmdline.startswith("postgres:") and f" {database_name} " in cmdline else None)
            if kind:
                times = proc.cpu_times()
                seen[kind][proc.info["pid"]] = times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return seen


def udp_receive_drops() -> int:
    """Datagrams the kernel dropped for a full socket receive buffer, machine-wide (/proc/net/snmp RcvbufErrors)."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return 0


def measure(server: radius.FreeRadius, logins: list[Login], concurrency: int, requests: int, database_name: str,
            rng: random.Random, dictionary: Dictionary) -> dict:
    """Warm up, then time `requests` Access-Requests with `concurrency` outstanding; check every answer."""
    drive(server.auth_port, build(logins, min(WARM_UP, requests), concurrency, rng, dictionary))
    queues = build(logins, requests, concurrency, rng, dictionary)
    me = psutil.Process()
    loadavg, drops = os.getloadavg()[0], udp_receive_drops()
    before, own_before, machine_before = cpu_by_process(server.process.pid, database_name), me.cpu_times(), \
        psutil.cpu_times()
    result = drive(server.auth_port, queues)
    after, own_after, machine_after = cpu_by_process(server.process.pid, database_name), me.cpu_times(), \
        psutil.cpu_times()
    ordered = sorted(result["latencies"])
    wrong = []
    outcomes = {"service": 0, "walled_garden": 0, "reject": 0}
    for (_, authenticator, index), raw in result["answers"]:
        outcomes[logins[index].expect] += 1
        why = wrong_answer(logins[index], authenticator, raw, dictionary)
        if why:
            wrong.append(f"{logins[index].username}: {why}")
    busy = sum(getattr(machine_after, f) - getattr(machine_before, f) for f in ("user", "system", "nice", "irq",
                                                                                 "softirq"))
    spent = {kind: sum(t - before[kind].get(pid, 0.0) for pid, t in after[kind].items()) for kind in after}
    seconds = result["seconds"]
    return {
        "concurrency": concurrency, "requests": sum(len(q) for q in queues), "answered": len(ordered),
        "seconds": seconds, "auth_per_s": len(ordered) / seconds if seconds else 0.0,
        "p50_ms": percentile(ordered, 0.50) * 1000, "p95_ms": percentile(ordered, 0.95) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000, "max_ms": (ordered[-1] if ordered else 0.0) * 1000,
        "timeouts": result["timeouts"], "udp_receive_drops": udp_receive_drops() - drops, "loadavg_1m": loadavg,
        "wrong_answers": len(wrong), "wrong_examples": wrong[:5],
        "outcomes": outcomes,
        "cpu_s": {"freeradius": spent["freeradius"], "postgresql": spent["postgresql"],
                  "generator": (own_after.user + own_after.system) - (own_before.user + own_before.system),
                  "machine_busy": busy, "machine_capacity": seconds * (os.cpu_count() or 1)},
    }


def thread_pool(raddb: Path) -> dict[str, int]:
    """The thread pool FreeRADIUS ran with (rlm_sql's connection pool is sized from it in deploy/freeradius/sql)."""
    block = re.search(r"(?ms)^thread pool \{(.*?)^\}", (raddb / "radiusd.conf").read_text()).group(1)
    return {key: int(value) for key, value in re.findall(r"(?m)^\s*(\w+)\s*=\s*(\d+)\s*$", block)}


def freeradius_version() -> str:
    """FreeRADIUS's version line."""
    out = subprocess.run([str(radius.FREERADIUS), "-v"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"Version (\S+?),", out)
    return found.group(1) if found else "unknown"


def postauth(url: str) -> dict:
    """What FreeRADIUS wrote to radpostauth: one row per answer, and never a password."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows, passwords = conn.execute(text("SELECT count(*), count(pass) FROM radpostauth")).one()
    engine.dispose()
    return {"rows": rows, "with_password": passwords}


def main(argv=None) -> dict:
    """Run the benchmark and report its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=20_000, help="timed Access-Requests per concurrency level")
    parser.add_argument("--concurrency", type=lambda v: [int(n) for n in v.split(",")], default=[1, 16, 64, 256],
                        help="outstanding requests, one level after another: e.g. 1,16,64")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "radius_auth.json"))
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args(argv)
    if not radius.available():
        raise SystemExit("FreeRADIUS is not installed (apt-get install freeradius freeradius-postgresql)")
    name = f"isp_bench_radius_{os.getpid()}"
    url = database(name)
    # Not under a private temporary directory of root's: FreeRADIUS runs as nobody and must reach its files.
    workdir = Path(tempfile.mkdtemp(prefix="isp-bench-freeradius-"))
    server = None
    loadavg = os.getloadavg()
    try:
        say(f"migrating, then loading {args.subscriptions:,} subscriptions set-based")
        migrate(url)
        load_s, counts = load(url, args.subscriptions)
        logins = read_logins(url)
        say(f"loaded in {load_s:.1f}s: {counts}; EXPLAIN ANALYZE of FreeRADIUS's queries")
        plans = explain(url, logins)
        costs = query_costs(url, logins, random.Random(args.seed))
        server = radius.FreeRadius(url, workdir).start()
        pool = thread_pool(workdir / "raddb")
        dictionary = Dictionary(str(radius.DICTIONARY))
        rng = random.Random(args.seed)
        runs = []
        for concurrency in args.concurrency:
            say(f"{concurrency} outstanding: {args.requests:,} Access-Requests")
            runs.append(measure(server, logins, concurrency, args.requests, name, rng, dictionary))
            one = runs[-1]
            say(f"  {one['auth_per_s']:,.0f} auth/s, p50 {one['p50_ms']:.2f} ms, p95 {one['p95_ms']:.2f} ms, "
                f"p99 {one['p99_ms']:.2f} ms, {one['timeouts']} timeouts, {one['wrong_answers']} wrong")
        written = postauth(url)
        complaints = [line for line in server.output if re.search(r"\b(Error|Warning|WARNING|ERROR)\b", line)]
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if not args.keep:
            drop(name)
    figures = {"date": str(date.today()), "commit": commit_id(), "cores": os.cpu_count(),
               "machine": platform.machine(), "loadavg_at_start": [round(x, 2) for x in loadavg],
               "subscriptions": args.subscriptions, "by_state": counts, "load_s": load_s,
               "freeradius": freeradius_version(), "thread_pool": pool, "explain": plans, "query_costs": costs,
               "runs": runs, "radpostauth": written, "freeradius_complaints": complaints[-20:]}
    print(json.dumps({k: v for k, v in figures.items() if k != "explain"}, indent=2, default=str))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    if args.results:
        write_section(Path(args.results), figures)
    missed = [name for name in PER_USER if not plans[name]["uses_login_index"]]
    if missed:
        raise RuntimeError(f"{', '.join(missed)}: not an index scan on {INDEX}:\n"
                           + "\n\n".join(plans[name]["plan"] for name in missed))
    return figures


def write_section(path: Path, f: dict) -> None:
    """Append a dated section: the figures per concurrency level and the plans of FreeRADIUS's queries."""
    states = f["by_state"]
    pool = f["thread_pool"]
    lines = [
        f"\n{TITLE}, {f['date']}, commit {f['commit']}, {f['cores']} cores ({f['machine']})\n",
        f"{f['subscriptions']:,} subscriptions: {states.get('active', 0):,} active, "
        f"{states.get('non_payment', 0):,} suspended for non-payment (walled garden), {states.get('manual', 0):,} "
        f"suspended manually (reject), {states.get('cancelled', 0):,} cancelled (no rows), {states['static_ip']:,} "
        f"with a static IP; loaded set-based and vacuumed in {f['load_s']:.1f} s. FreeRADIUS {f['freeradius']} with "
        f"deploy/freeradius (sql, site): thread pool start_servers {pool.get('start_servers')}, max_servers "
        f"{pool.get('max_servers')}, min/max spare {pool.get('min_spare_servers')}/{pool.get('max_spare_servers')}; "
        f"the rlm_sql pool follows it (start {pool.get('start_servers')}, max {pool.get('max_servers')} "
        f"connections). PAP Access-Requests (with Message-Authenticator) for random logins, pre-built, from one "
        f"Python selector loop with N outstanding; every answer checked against billing. Each answer also writes a "
        f"radpostauth row ({f['radpostauth']['rows']:,} rows, {f['radpostauth']['with_password']} with a password). "
        f"Generator, FreeRADIUS and PostgreSQL share the cores; load average at start "
        f"{', '.join(str(x) for x in f['loadavg_at_start'])}.\n",
        "| outstanding | requests | auth/s | p50 ms | p95 ms | p99 ms | max ms | timeouts (UDP drops) "
        "| wrong answers | CPU s: FreeRADIUS / PostgreSQL / generator / machine (of capacity) | load 1 min |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in f["runs"]:
        cpu = r["cpu_s"]
        lines.append(f"| {r['concurrency']} | {r['requests']:,} | {r['auth_per_s']:,.0f} | {r['p50_ms']:.2f} "
                     f"| {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['max_ms']:.1f} "
                     f"| {r['timeouts']} ({r['udp_receive_drops']}) "
                     f"| {r['wrong_answers']} | {cpu['freeradius']:.1f} / {cpu['postgresql']:.1f} / "
                     f"{cpu['generator']:.1f} / {cpu['machine_busy']:.1f} ({cpu['machine_capacity']:.1f}) "
                     f"| {r['loadavg_1m']:.1f} |")
    lines += ["", "FreeRADIUS's statements: EXPLAIN (ANALYZE, BUFFERS) for an active login with a static IP, and a "
              f"PostgreSQL backend's CPU per statement ({COST_SAMPLES:,} runs each, random active logins, literal "
              "SQL in autocommit as rlm_sql sends it):", "",
              "| statement | scans | rows | execution ms | planning ms | backend CPU µs | round trip µs |",
              "|---|---|---|---|---|---|---|"]
    costs = f["query_costs"]
    for name, cost in costs.items():
        plan = f["explain"].get(name)
        shown = (f"{'; '.join(plan['scans'])} | {plan['rows']} | {plan['execution_ms']:.3f} "
                 f"| {plan['planning_ms']:.3f}") if plan else "– | – | – | –"
        lines.append(f"| {name} | {shown} | {cost['backend_cpu_us']:.0f} | {cost['round_trip_us']:.0f} |")
    lines.append(f"| **per accepted login** | | | | | **{sum(c['backend_cpu_us'] for c in costs.values()):.0f}** "
                 f"| **{sum(c['round_trip_us'] for c in costs.values()):.0f}** |")
    text_ = path.read_text() if path.exists() else "# Benchmark results\n"
    path.write_text(text_.rstrip("\n") + "\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

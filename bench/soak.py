"""Mixed-load soak: ~16 API clients writing at random to a few dozen customers while billing runs go, then every
ledger invariant, billing coverage and reconcile, and the requests counted by operation and status (issue 11).

Usage: .venv/bin/python bench/soak.py [--clients 16] [--customers 36] [--seconds 120] [--seed 1]
       [--results bench/RESULTS.md] [--json FILE] [--keep] [--database-url URL --redis-url URL]

1. Creates a throwaway PostgreSQL database next to BENCH_DATABASE_URL and a private Redis on a free port (or uses
   --database-url, migrated and empty, and --redis-url: the `slow` test does), migrates, and seeds in-process:
   three plans; N customers with one or two subscriptions that started up to ~70 days ago and were never billed
   (so a run catches up one to three periods each), an open invoice of 100.00 and a draft each; an admin's token.
2. Starts gunicorn with deploy/gunicorn.conf.py (gthread, 2 workers x 8 threads) as deployed (APP_ENV=production,
   each request sent as through a TLS proxy), rate limits off.
3. For --seconds: --clients threads each send random API writes, one at a time, to random customers: payments
   (to a named invoice or none), pay-an-invoice, reversals, voids, cancellations, plan changes, suspensions and
   resumes, new subscriptions (due at once), drafts created, edited, issued and deleted, generate-invoice. One
   write in ten is a double click: the same request sent twice at the same instant. Meanwhile a billing thread
   starts `POST /api/billing/bulk-generate/` and drains its jobs with a real `flask rq worker --burst`, again and
   again (chunks of 4 customers, so chunks interleave with the clients' writes).
4. Then waits for the last run, and checks: no 5xx; every refusal a 4xx JSON envelope with a stable code;
   reconcile() and the direct SQL invariants (tests/concurrency/invariants.py) clean; billing coverage clean;
   no billing run left running or failed; payments on record = the 201 answers (nothing lost, nothing phantom);
   void credit notes = void 200s; reversed payments = reverse 200s.
5. Prints the figures and appends a dated section to --results ('' writes nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.billing_run import commit_id, database, drop  # noqa: E402  (after the path insert above)
from bench.http_load import HTTPS, free_port, server_env, start_gunicorn, start_redis, stop, wait_ready  # noqa: E402

REFUSAL_CODES = {400: {"VALIDATION_ERROR"}, 404: {"NOT_FOUND"}, 409: {"CONFLICT"},
                 422: {"BUSINESS_RULE_VIOLATION", "VALIDATION_ERROR"}}
WEIGHTS = {"payment": 14, "pay_invoice": 10, "reverse": 6, "void": 5, "cancel": 2, "change_plan": 4, "suspend": 5,
           "resume": 5, "add_subscription": 3, "create_draft": 5, "edit_draft": 5, "issue_draft": 5,
           "delete_draft": 3, "generate": 6}
DOUBLE_CLICK = 0.1
CHUNK_SIZE = "4"


def say(message: str) -> None:
    """Print a progress line at once."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- set-up -------------------------------------------------------------------------------------------------------

def make_app(env: dict, workdir: Path):
    """An app on the soak's database, configured from the same environment as the server."""
    from isp_admin import create_app
    from isp_admin.config import load_config

    config = load_config(workdir / "instance", {**env, "APP_ENV": "testing", "SECRET_KEY": "s" * 48})
    config.update({"RATELIMIT_ENABLED": False, "SERVER_NAME": None})
    return create_app(config)


def seed(app, customers: int, rng: random.Random) -> dict:
    """Plans, customers with never-billed subscriptions (due, catching up), an open invoice and a draft each; an
    admin's token. Returns the token and the plan ids."""
    from isp_admin.extensions import db
    from isp_admin.models import Customer, Plan, Subscription, User
    from isp_admin.services.billing import invoices
    from isp_admin.services.identity import tokens
    from isp_admin.services.platform.clock import today

    with app.app_context():
        day = today()
        admin = User(email="soak-admin@example.com", name="Soak", role="admin", password_hash="!")
        plans = [Plan(code=f"SOAK-{price}", name=f"Soak {price // 100}", download_mbps=50, upload_mbps=10,
                      monthly_price_cents=price, setup_fee_cents=0, tax_rate_bp=1600, currency="USD", active=True)
                 for price in (2900, 4900, 7900)]
        db.session.add_all([admin, *plans])
        db.session.flush()
        for n in range(customers):
            customer = Customer(account_number=f"S{n:06d}", name=f"Soak customer {n}", email=f"soak{n}@mail.example",
                                status="active")
            db.session.add(customer)
            db.session.flush()
            for _ in range(rng.choice((1, 1, 2))):
                start = day - timedelta(days=rng.randint(0, 70))
                db.session.add(Subscription(customer_id=customer.id, plan_id=rng.choice(plans).id, status="active",
                                            start_date=start, billing_day=start.day, next_bill_date=start))
            invoice = invoices.create_draft(customer.id, [{"description": "Installation", "unit_price_cents": 10000}],
                                            day)
            invoices.issue(invoice.id, day)
            invoices.create_draft(customer.id, [{"description": "Router", "unit_price_cents": 4000}], day)
        _, secret = tokens.create_token(admin.id, "soak", "read,write,billing", None)
        db.session.commit()
        return {"token": secret, "plans": [p.id for p in plans], "customers": list(db.session.scalars(
            db.select(Customer.id).order_by(Customer.id)))}


# --- the clients --------------------------------------------------------------------------------------------------

class Picker:
    """Random targets from the database as it is now (read on the soak's own connection pool; may be stale by
    the time the request lands, which is the point)."""

    def __init__(self, url: str, seeded: dict, rng: random.Random):
        self.engine = create_engine(url, pool_size=4, max_overflow=4)
        self.seeded, self.rng = seeded, rng
        self.lock = threading.Lock()

    def one(self, sql: str, **params):
        with self.engine.connect() as conn:
            return conn.execute(text(sql + " ORDER BY random() LIMIT 1"), params).scalar()

    def request(self, op: str) -> tuple[str, str, dict | None] | None:
        """A (method, path, body) for `op` on a random customer, or None when it has no target."""
        with self.lock:
            customer = self.rng.choice(self.seeded["customers"])
            amount = self.rng.randrange(1000, 15001, 100)
            plan = self.rng.choice(self.seeded["plans"])
            reason = self.rng.choice(("manual", "vacation"))
            cents = self.rng.randrange(1000, 9001, 100)
        c = {"c": customer}
        if op == "payment":
            invoice = self.one("SELECT id FROM invoices WHERE customer_id = :c AND status IN ('open', 'overdue')", **c)
            return "POST", "/api/billing/payments/", {"customer_id": customer, "amount_cents": amount,
                                                      "method": "cash", "invoice_id": invoice}
        if op in ("pay_invoice", "void"):
            statuses = "('open', 'overdue')" if op == "pay_invoice" else "('open', 'overdue', 'paid')"
            invoice = self.one(f"SELECT id FROM invoices WHERE customer_id = :c AND status IN {statuses}", **c)
            if invoice is None:
                return None
            if op == "void":
                return "POST", f"/api/billing/invoices/{invoice}/void/", {"reason": "Soak"}
            return "POST", f"/api/billing/invoices/{invoice}/pay/", {"method": "card"}
        if op == "reverse":
            payment = self.one("SELECT id FROM payments WHERE customer_id = :c AND status = 'completed'", **c)
            return payment and ("POST", f"/api/billing/payments/{payment}/reverse/", {"reason": "Bounced"})
        if op in ("cancel", "change_plan", "suspend", "resume"):
            status = {"suspend": "('active')", "resume": "('suspended')"}.get(op, "('active', 'suspended')")
            sub = self.one(f"SELECT id FROM subscriptions WHERE customer_id = :c AND status IN {status}", **c)
            if sub is None:
                return None
            body = {"cancel": {}, "change_plan": {"plan_id": plan}, "suspend": {"reason": reason}, "resume": None}[op]
            return "POST", f"/api/subscriptions/{sub}/{op.replace('_', '-')}/", body
        if op == "add_subscription":
            return "POST", "/api/subscriptions/", {"customer_id": customer, "plan_id": plan}
        if op == "create_draft":
            return "POST", "/api/billing/invoices/", {"customer_id": customer, "lines": [
                {"description": "Support visit", "unit_price_cents": cents}]}
        if op in ("edit_draft", "issue_draft", "delete_draft"):
            draft = self.one("SELECT id FROM invoices WHERE customer_id = :c AND status = 'draft'", **c)
            if draft is None:
                return None
            if op == "edit_draft":
                return "PUT", f"/api/billing/invoices/{draft}/", {"lines": [
                    {"description": "Support visit", "unit_price_cents": cents}]}
            return ("POST", f"/api/billing/invoices/{draft}/issue/", None) if op == "issue_draft" else (
                "DELETE", f"/api/billing/invoices/{draft}/", None)
        if op == "generate":
            return "POST", "/api/billing/generate-invoice/", {"customer_id": customer}
        raise ValueError(op)


class Tally:
    """Answers counted by operation and status; contract breaches and effects kept for the checks."""

    def __init__(self):
        self.lock = threading.Lock()
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.breaches: list[str] = []
        self.payments: set[int] = set()
        self.voids = self.reversals = self.double_clicks = 0

    def add(self, op: str, response: requests.Response | None, error: str | None = None) -> None:
        with self.lock:
            if response is None:
                self.statuses[op]["error"] += 1
                self.breaches.append(f"{op}: no answer ({error})")
                return
            status = response.status_code
            self.statuses[op][status] += 1
            try:
                body = response.json()
            except ValueError:
                body = None
            if status >= 500:
                self.breaches.append(f"{op}: {status} {response.text[:200]}")
            elif status >= 400:
                code = (body or {}).get("error", {}).get("code") if isinstance(body, dict) else None
                if not isinstance(body, dict) or body.get("success") is not False or \
                        code not in REFUSAL_CODES.get(status, set()):
                    self.breaches.append(f"{op}: {status} without a clean envelope: {response.text[:200]}")
            elif op in ("payment", "pay_invoice") and status == 201:
                self.payments.add(body["data"]["id"])
            elif op == "void" and status == 200:
                self.voids += 1
            elif op == "reverse" and status == 200:
                self.reversals += 1


def client(base: str, token: str, picker: Picker, tally: Tally, until: float, seed_: int) -> None:
    """One API client: random writes, one at a time (now and then a double click), until the deadline."""
    rng = random.Random(seed_)
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}", **HTTPS}
    ops, weights = list(WEIGHTS), list(WEIGHTS.values())

    def send(op: str, method: str, path: str, body, start: threading.Barrier | None = None) -> None:
        if start:
            start.wait(timeout=30)
        try:
            answer = requests.request(method, base + path, json=body, headers=headers, timeout=60) if start else \
                session.request(method, base + path, json=body, headers=headers, timeout=60)
        except requests.RequestException as exc:
            tally.add(op, None, str(exc))
            return
        tally.add(op, answer)

    while time.monotonic() < until:
        op = rng.choices(ops, weights)[0]
        request = picker.request(op)
        if request is None:
            continue
        if rng.random() < DOUBLE_CLICK:
            start = threading.Barrier(2)
            twin = threading.Thread(target=send, args=(op, *request, start))
            twin.start()
            send(op, *request, start)
            twin.join()
            with tally.lock:
                tally.double_clicks += 1
        else:
            send(op, *request)


def biller(base: str, token: str, env: dict, until: float, runs: list, stop_event: threading.Event) -> None:
    """Start a billing run and drain it with a real RQ worker in burst mode, again and again, until the deadline."""
    headers = {"Authorization": f"Bearer {token}", **HTTPS}
    while time.monotonic() < until and not stop_event.is_set():
        answer = requests.post(f"{base}/api/billing/bulk-generate/", json={"kind": "generate_monthly_invoices"},
                               headers=headers, timeout=60)
        if answer.status_code != 202:
            runs.append({"start_status": answer.status_code, "body": answer.text[:300]})
            time.sleep(1)
            continue
        run_id = answer.json()["data"]["id"]
        worker = subprocess.run([sys.executable, "-m", "flask", "rq", "worker", "--burst"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        progress = requests.get(f"{base}/api/billing/bulk-generate/{run_id}/", headers=headers, timeout=60).json()
        runs.append({"id": run_id, "worker_exit": worker.returncode, "status": progress["data"]["status"],
                     "chunks": f"{progress['data'].get('done')}/{progress['data'].get('total')}",
                     "counts": progress["data"].get("counts"),
                     "worker_errors": [line for line in worker.stderr.splitlines() if "Error" in line][:5]})


# --- the checks ---------------------------------------------------------------------------------------------------

def check(app, tally: Tally, seeded_payments: set[int], seeded_void_notes: int) -> dict:
    """Every invariant after the load: a dict of named problem lists (all empty when sound) and counts."""
    from isp_admin.extensions import db
    from isp_admin.services.platform.clock import today
    from tests.concurrency.invariants import coverage_problems, ledger_problems

    with app.app_context():
        ledger = ledger_problems()
        coverage = coverage_problems(today())
        rows = lambda sql: db.session.execute(text(sql)).all()  # noqa: E731
        payments = {r[0] for r in rows("SELECT id FROM payments")} - seeded_payments
        reversed_ = rows("SELECT count(*) FROM payments WHERE status = 'reversed'")[0][0]
        void_notes = rows("SELECT count(*) FROM credit_notes WHERE kind = 'void'")[0][0] - seeded_void_notes
        stuck = rows("SELECT id, kind, status, error FROM job_runs WHERE status <> 'succeeded'")
        figures = {r[0]: r[1] for r in rows("""
            SELECT 'invoices issued', count(*) FROM invoices WHERE status <> 'draft'
            UNION ALL SELECT 'period lines billed', count(*) FROM invoice_lines WHERE kind = 'subscription'
            UNION ALL SELECT 'payments', count(*) FROM payments
            UNION ALL SELECT 'credit notes', count(*) FROM credit_notes
            UNION ALL SELECT 'billing runs', count(*) FROM job_runs
            UNION ALL SELECT 'subscriptions', count(*) FROM subscriptions""")}
    money = []
    if payments != tally.payments:
        money.append(f"payments on record but not answered 201: {sorted(payments - tally.payments)[:20]}; "
                     f"answered 201 but not on record: {sorted(tally.payments - payments)[:20]}")
    if void_notes != tally.voids:
        money.append(f"{void_notes} void credit notes for {tally.voids} void 200s")
    if reversed_ != tally.reversals:
        money.append(f"{reversed_} reversed payments for {tally.reversals} reverse 200s")
    return {"breaches": tally.breaches, "ledger": ledger, "coverage": coverage, "money": money,
            "runs_not_succeeded": [str(tuple(r)) for r in stuck], "figures": figures}


# --- the run ------------------------------------------------------------------------------------------------------

def soak(database_url: str, redis_url: str, workdir: Path, clients: int = 16, customers: int = 36,
         seconds: float = 120, seed_: int = 1) -> dict:
    """Seed, serve, load, check; return the figures (see the module's docstring)."""
    from isp_admin.extensions import db

    rng = random.Random(seed_)
    tag = f"soak_{os.getpid()}_{seed_}"
    env = {**server_env(database_url, redis_url), "RQ_QUEUE": tag, "CACHE_KEY_PREFIX": f"{tag}:",
           "RATELIMIT_KEY_PREFIX": f"{tag}-rl",
           "BILLING_CHUNK_SIZE": CHUNK_SIZE, "GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "8"}
    app = make_app(env, workdir)
    seeded = seed(app, customers, rng)
    with app.app_context():
        seeded_payments = set(db.session.scalars(text("SELECT id FROM payments")))
        seeded_void_notes = db.session.scalar(text("SELECT count(*) FROM credit_notes WHERE kind = 'void'"))
    port = free_port()
    base, log = f"http://127.0.0.1:{port}", workdir / "gunicorn.log"
    server = start_gunicorn(env, port, log)
    picker = Picker(database_url, seeded, rng)
    tally, runs, stop_event = Tally(), [], threading.Event()
    try:
        wait_ready(base, server, log)
        say(f"{clients} clients on {customers} customers for {seconds:.0f} s, billing runs alongside")
        started = time.monotonic()
        until = started + seconds
        threads = [threading.Thread(target=client, args=(base, seeded["token"], picker, tally, until, seed_ * 1000 + n))
                   for n in range(clients)]
        threads.append(threading.Thread(target=biller, args=(base, seeded["token"], env, until, runs, stop_event)))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    finally:
        stop_event.set()
        stop(server)
        picker.engine.dispose()
    result = check(app, tally, seeded_payments, seeded_void_notes)
    with app.app_context():
        db.engine.dispose()
    statuses = {op: dict(sorted(c.items(), key=str)) for op, c in sorted(tally.statuses.items())}
    totals = Counter()
    for counts in tally.statuses.values():
        totals.update(counts)
    result.update({"clients": clients, "customers": customers, "seconds": round(elapsed, 1),
                   "requests": sum(totals.values()), "by_status": dict(sorted(totals.items(), key=str)),
                   "statuses": statuses, "double_clicks": tally.double_clicks, "billing_runs": runs,
                   "server_errors_logged": _logged_errors(log)})
    return result


def _logged_errors(log: Path) -> list[str]:
    from tests.concurrency.racing import logged_errors

    return logged_errors(log.read_text(errors="replace")) if log.exists() else []


def problems(result: dict) -> list[str]:
    """Every failed check of a soak's result, one line each."""
    out = []
    for key in ("breaches", "ledger", "coverage", "money", "runs_not_succeeded"):
        out += [f"{key}: {line}" for line in result[key]]
    return out


def write_section(path: Path, result: dict) -> None:
    """Append the run's figures to the results file."""
    failed = problems(result)
    lines = [f"\n## Mixed-load soak (bench/soak.py), {date.today()}, commit {commit_id()}, "
             f"{os.cpu_count()} cores ({platform.machine()})\n",
             f"{result['clients']} clients, {result['customers']} customers, {result['seconds']} s, "
             f"{result['requests']} requests ({result['double_clicks']} double clicks), "
             f"{len(result['billing_runs'])} billing runs alongside (RQ worker, burst).\n",
             "| operation | " + " | ".join(str(s) for s in result["by_status"]) + " |",
             "| --- |" + " --- |" * len(result["by_status"])]
    for op, counts in result["statuses"].items():
        lines.append(f"| {op} | " + " | ".join(str(counts.get(s, 0)) for s in result["by_status"]) + " |")
    lines.append("| **all** | " + " | ".join(f"**{n}**" for n in result["by_status"].values()) + " |")
    lines.append("")
    lines.append(f"Afterwards: {', '.join(f'{v} {k}' for k, v in result['figures'].items())}. "
                 + ("Every check clean: no 5xx, every refusal a 4xx envelope, reconcile and the SQL invariants, "
                    "billing coverage, no run left running, payments/voids/reversals on record = the answers."
                    if not failed else f"**{len(failed)} failed checks**, first: " + "; ".join(failed[:8])))
    with path.open("a") as out:
        out.write("\n".join(lines) + "\n")


def main(argv=None) -> dict:
    """Run the soak and report its figures; exit 1 when a check failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--customers", type=int, default=36)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="'' to write nothing")
    parser.add_argument("--json", help="also write every figure and failed check to this file")
    parser.add_argument("--keep", action="store_true", help="keep the soak database")
    parser.add_argument("--database-url", help="an existing, migrated, empty database (default: a throwaway one)")
    parser.add_argument("--redis-url", help="an existing Redis (default: a private redis-server)")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="isp-soak-"))
    name = None if args.database_url else f"isp_soak_{os.getpid()}"
    redis_proc = None
    try:
        url = args.database_url or database(name)
        redis_url = args.redis_url
        if not redis_url:
            redis_proc, redis_url = start_redis(workdir)
        if name:
            say("migrating the throwaway database")
            subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], cwd=ROOT, check=True,
                           env={**os.environ, "DATABASE_URL": url, "FLASK_APP": "wsgi.py", "APP_ENV": "development",
                                "SECRET_KEY": "s" * 48}, capture_output=True)
        result = soak(url, redis_url, workdir, args.clients, args.customers, args.seconds, args.seed)
    finally:
        stop(redis_proc)
        if name and not args.keep:
            drop(name)
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps({k: v for k, v in result.items() if k != "billing_runs"}, indent=1, default=str))
    failed = problems(result)
    for line in failed[:40]:
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    say(f"{result['requests']} requests {result['by_status']}; {len(failed)} failed checks")
    if args.results:
        write_section(Path(args.results), result)
    return result


if __name__ == "__main__":
    sys.exit(1 if problems(main()) else 0)

"""Benchmark the monthly billing run: in-process against a set-based INSERT … SELECT, or fanned out over RQ workers.

Usage: .venv/bin/python bench/billing_run.py [--customers 100000] [--chunk 1000] [--results bench/RESULTS.md]
       .venv/bin/python bench/billing_run.py --customers 1000000 --workers 1,2,4 [--timeout 3600]

Creates a throwaway PostgreSQL database next to BENCH_DATABASE_URL (default the local `test` database's
server), loads customers with `generate-test-data`, makes every live subscription due on one date, then:
1. times the real run (isp_admin.services.billing.run.bill_customer_range per chunk, one transaction each —
   the same function the RQ workers and the CLI call), and
2. times an INSERT … SELECT that computes the same lines in SQL alone (the floor: no invoices, numbers,
   audit, outbox or credit), rolled back.
Prints subscriptions/s for both and appends a row to the results file.

With --workers N,M,…, instead: the loaded database becomes a template and, for each worker count, a copy of it
(CREATE DATABASE … TEMPLATE), a private redis-server and N `flask rq worker` processes as deployed; the run is
started as the API and the staff page start it (queue.start_run: a job_runs row, then the coordinating job, which
enqueues one bill_chunk job per chunk). Timed from the run's row (written just before the enqueue) to its
finished_at (the last chunk's commit). Each run must succeed and bill every due subscription exactly once, with
nothing due after. Prints subscriptions/s and the speed-up over 1 worker; appends a row per worker count.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
AS_OF = date(2026, 12, 1)
MAKE_DUE = [
    "UPDATE subscriptions SET next_bill_date = :d, start_date = LEAST(start_date, :d) "
    "WHERE status IN ('active', 'pending')",
    "UPDATE subscriptions SET status = 'active' WHERE status = 'pending'",
]
# What the run bills (billing._due_rows, BILL_WHILE_SUSPENDED off), counted before and after each fanned-out run.
DUE = """SELECT count(*) FROM subscriptions s JOIN customers c ON c.id = s.customer_id
         WHERE s.status IN ('active', 'pending') AND s.next_bill_date <= :as_of AND s.start_date <= :as_of
           AND c.status <> 'closed'"""
# A chunk of 1,000 customers takes about a second; minutes without one counted in means a worker is stuck.
STALL_S = 300

# The same writes as the run, as plain SQL: one invoice per customer, a line per subscription, the next bill
# date moved on, an audit event and an outbox row per invoice. Proration and numbering are simplified (whole
# periods, ids as numbers): this is the floor no application code can beat.
SET_BASED = [
    """CREATE TEMP TABLE due ON COMMIT DROP AS
       SELECT s.id, s.customer_id, s.next_bill_date, coalesce(s.price_override_cents, p.monthly_price_cents) AS price,
              p.tax_rate_bp, p.currency
       FROM subscriptions s JOIN plans p ON p.id = s.plan_id JOIN customers c ON c.id = s.customer_id
       WHERE s.status IN ('active', 'pending') AND s.next_bill_date <= :as_of AND s.start_date <= :as_of
         AND c.status <> 'closed'""",
    """INSERT INTO invoices (id, number, customer_id, status, issue_date, due_date, currency, subtotal_cents,
                             tax_cents, total_cents, amount_paid_cents, credit_applied_cents, created_at, updated_at)
       SELECT nextval('invoices_id_seq'), 'B-' || customer_id, customer_id, 'open', :as_of, :as_of + 14, min(currency),
              sum(price), sum((price * tax_rate_bp * 2 + 10000) / 20000),
              sum(price + (price * tax_rate_bp * 2 + 10000) / 20000), 0, 0, now(), now()
       FROM due GROUP BY customer_id""",
    """INSERT INTO invoice_lines (invoice_id, subscription_id, kind, description, period_start, period_end, days,
                                  period_days, quantity, unit_price_cents, amount_cents, tax_rate_bp, tax_cents)
       SELECT i.id, d.id, 'subscription', 'bench', d.next_bill_date, d.next_bill_date + 30, 30, 30, 1, d.price,
              d.price, d.tax_rate_bp, (d.price * d.tax_rate_bp * 2 + 10000) / 20000
       FROM due d JOIN invoices i ON i.number = 'B-' || d.customer_id""",
    """UPDATE subscriptions s SET next_bill_date = (d.next_bill_date + interval '1 month')::date, updated_at = now()
       FROM due d WHERE s.id = d.id""",
    """INSERT INTO audit_events (at, actor_type, actor_label, action, entity_type, entity_id, customer_id, after)
       SELECT now(), 'system', 'system', 'invoice.issue', 'invoices', id, customer_id,
              json_build_object('number', number, 'total_cents', total_cents)
       FROM invoices WHERE number LIKE 'B-%'""",
    """INSERT INTO notifications (customer_id, invoice_id, kind, channel, subject, status, attempts, created_at)
       SELECT customer_id, id, 'invoice', 'email', 'Invoice ' || number, 'queued', 0, now()
       FROM invoices WHERE number LIKE 'B-%'""",
]


def admin_sql(*statements: str) -> None:
    """Run statements on the benchmark server outside a transaction (CREATE and DROP DATABASE need that)."""
    admin = create_engine(BASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))
    admin.dispose()


def url_of(name: str) -> str:
    """Return the URL of database `name` on the benchmark server."""
    return make_url(BASE_URL).set(database=name).render_as_string(hide_password=False)


def database(name: str, template: str | None = None) -> str:
    """(Re)create database `name` on the benchmark server, empty or as a copy of `template`; return its URL."""
    # FILE_COPY copies the template's files after one checkpoint: at 1M customers much quicker than WAL-logging
    # every page (the default), and it leaves no WAL for the next run to contend with.
    copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"{copy}')
    return url_of(name)


def drop(name: str) -> None:
    """Drop the benchmark database."""
    admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def say(message: str) -> None:
    """Print a progress line at once (a 1M run takes a while)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def seed(url: str, customers: int) -> float:
    """Migrate and load `customers` through the real CLI; return the load time in seconds."""
    env = {**os.environ, "DATABASE_URL": url, "FLASK_APP": "wsgi.py", "APP_ENV": "development",
           "SECRET_KEY": "bench", "LOG_LEVEL": "WARNING"}
    env.pop("REDIS_URL", None)
    flask = [sys.executable, "-m", "flask"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    started = time.perf_counter()
    subprocess.run([*flask, "data", "generate-test-data", "--customers", str(customers), "--seed", "1"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def run(url: str, chunk: int) -> dict:
    """Make every live subscription due on AS_OF, then time the set-based floor and the real run."""
    from isp_admin import create_app
    from isp_admin.extensions import db
    from isp_admin.services.billing import run as billing
    from isp_admin.services.platform.audit import SYSTEM, acting_as

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "BILLING_CHUNK_SIZE": chunk, "LOG_LEVEL": "WARNING"})
    with app.app_context(), acting_as(SYSTEM):
        for statement in MAKE_DUE:
            db.session.execute(text(statement), {"d": AS_OF})
        db.session.commit()
        db.session.execute(text("ANALYZE"))
        db.session.commit()

        started = time.perf_counter()
        for statement in SET_BASED:
            db.session.execute(text(statement), {"as_of": AS_OF})
        floor_rows = db.session.scalar(text("SELECT count(*) FROM invoice_lines"))
        floor_s = time.perf_counter() - started
        db.session.rollback()

        started = time.perf_counter()
        ranges = billing.chunk_ranges(billing.customers_due(AS_OF), chunk)
        totals = {"invoices": 0, "lines": 0, "total_cents": 0}
        for first_last in ranges:
            counts = billing.bill_customer_range(AS_OF, first_last)
            db.session.commit()
            for key in totals:
                totals[key] += counts[key]
        run_s = time.perf_counter() - started
        again = billing.plan_invoices(AS_OF)
        db.session.rollback()
        subscriptions = db.session.scalar(text("SELECT count(*) FROM invoice_lines WHERE kind = 'subscription'"))
        db.session.remove()
        db.engine.dispose()  # closed here, not by the garbage collector after the database is dropped
    return {"subscriptions": subscriptions, "floor_rows": floor_rows, "floor_s": floor_s, "run_s": run_s,
            "chunks": len(ranges), "invoices": totals["invoices"], "lines": totals["lines"],
            "due_after_run": len(again.invoices)}


# --- fanned out over RQ workers ------------------------------------------------------------------------------

def make_due(url: str) -> int:
    """Make every live subscription due on AS_OF, vacuum and analyse; return how many subscriptions are due."""
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in MAKE_DUE:
            conn.execute(text(statement), {"d": AS_OF})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # Once, in the template: every copy then starts without the UPDATEs' dead rows and with fresh statistics.
        conn.execute(text("VACUUM ANALYZE"))
        due = conn.scalar(text(DUE), {"as_of": AS_OF})
    engine.dispose()
    return due


def start_workers(url: str, redis_url: str, queue: str, chunk: int, count: int, logdir: Path) -> list:
    """Start `count` `flask rq worker` processes as deployed; return (process, log file) pairs."""
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": redis_url, "RQ_QUEUE": queue, "FLASK_APP": "wsgi.py",
           "APP_ENV": "production", "PUBLIC_URL": "https://isp.example.com", "SECRET_KEY": secrets.token_hex(32),
           "LOG_LEVEL": "WARNING",
           "BILLING_CHUNK_SIZE": str(chunk)}
    workers = []
    for index in range(count):
        log = logdir / f"{queue}-worker{index}.log"
        with log.open("w") as out:
            # A session of its own: the worker's scheduler (a forked child) can be stopped with it by group id.
            proc = subprocess.Popen([sys.executable, "-m", "flask", "rq", "worker", "--name", f"{queue}-{index}"],
                                    cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        workers.append((proc, log))
    return workers


def stop_workers(workers: list) -> None:
    """Stop the workers (SIGTERM: warm shutdown, which stops their schedulers), killing what outlives 30 s."""
    for proc, _ in workers:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + 30
    for proc, _ in workers:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # a scheduler left behind by a worker that died


def failure(message: str, workers: list) -> RuntimeError:
    """An error carrying the end of every worker's log."""
    logs = [f"--- {log.name} (exit code {proc.poll()}):\n" + "\n".join(log.read_text().splitlines()[-40:])
            for proc, log in workers]
    return RuntimeError("\n".join([message, *logs]))


def wait_for_workers(queue, workers: list, timeout: float = 120) -> None:
    """Wait until every worker has registered on the queue, so start-up is not timed."""
    from rq import Worker

    deadline = time.monotonic() + timeout
    while Worker.count(queue=queue) < len(workers):
        if any(proc.poll() is not None for proc, _ in workers) or time.monotonic() > deadline:
            raise failure(f"{len(workers)} worker(s) did not start", workers)
        time.sleep(0.1)


def wait_for_run(run_id: int, queue, workers: list, timeout: float) -> dict:
    """Poll the run's job_runs row until it finishes; fail with the worker logs on error, stall or timeout."""
    from isp_admin.extensions import db
    from isp_admin.services.platform import job_runs

    label = f"run #{run_id} on {len(workers)} worker(s)"
    started = changed = shown = time.monotonic()
    done = 0
    while True:
        report = job_runs.progress(run_id)
        db.session.rollback()  # no transaction left open between polls
        now = time.monotonic()
        if report["finished"]:
            if report["status"] != "succeeded":
                raise failure(f"{label} {report['status']}: {report['error']}", workers)
            return report
        # A chunk that raised waits for RQ's retry (10 s, then minutes): fail now, with the worker's traceback.
        if queue.failed_job_registry.count or queue.scheduled_job_registry.count:
            raise failure(f"{label}: a job failed ({queue.failed_job_registry.count} failed, "
                          f"{queue.scheduled_job_registry.count} awaiting retry)", workers)
        if any(proc.poll() is not None for proc, _ in workers):
            raise failure(f"{label}: a worker exited", workers)
        if report["done"] != done:
            done, changed = report["done"], now
        if now - changed > STALL_S or now - started > timeout:
            raise failure(f"{label}: timed out at {done}/{report['total']} chunks after {now - started:.0f}s",
                          workers)
        if now - shown >= 5:
            say(f"  {len(workers)} worker(s): {done:,}/{report['total']:,} chunks, {now - started:.0f}s")
            shown = now
        time.sleep(0.1)


def check_run(run_id: int, report: dict, due: int) -> dict:
    """Check the run billed every due subscription exactly once and left nothing due; return its counts."""
    from isp_admin.extensions import db

    billed = db.session.execute(text(
        """SELECT count(*) AS lines, count(DISTINCT l.subscription_id) AS subscriptions,
                  (SELECT count(*) FROM invoices WHERE job_run_id = :run) AS invoices
           FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
           WHERE i.job_run_id = :run AND l.kind = 'subscription'"""), {"run": run_id}).one()
    due_after = db.session.scalar(text(DUE), {"as_of": AS_OF})
    db.session.rollback()
    problems = [
        f"{billed.lines:,} subscription lines for {due:,} due subscriptions" if billed.lines != due else "",
        f"{billed.lines - billed.subscriptions:,} subscriptions billed twice" if billed.subscriptions != billed.lines
        else "",
        f"{due_after:,} subscriptions still due after the run" if due_after else "",
        f"{report['done']}/{report['total']} chunks counted in" if report["done"] != report["total"] else "",
        f"{billed.invoices:,} invoices but the run counted {report['counts'].get('invoices')}"
        if billed.invoices != report["counts"].get("invoices") else "",
    ]
    if any(problems):
        raise RuntimeError(f"run #{run_id} is wrong: " + "; ".join(p for p in problems if p))
    return {"subscriptions": billed.lines, "invoices": billed.invoices, "due_after_run": due_after}


def fanned_out_run(template: str, count: int, chunk: int, due: int, workdir: Path, timeout: float,
                   keep: bool) -> dict:
    """Bill a fresh copy of `template` on `count` real workers, as production starts a run; return its figures."""
    from bench.http_load import start_redis, stop
    from isp_admin import create_app
    from isp_admin.extensions import db
    from isp_admin.jobs.queue import get_queue, start_run

    name = f"{template}_w{count}"
    say(f"{count} worker(s): copying the database, starting redis-server and the workers")
    url = database(name, template=template)
    redis_proc, workers = None, []
    try:
        redis_proc, redis_url = start_redis(workdir)
        queue_name = f"bench-{os.getpid()}-w{count}"
        workers = start_workers(url, redis_url, queue_name, chunk, count, workdir)
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "REDIS_URL": redis_url, "RQ_QUEUE": queue_name,
                          "BILLING_CHUNK_SIZE": chunk, "LOG_LEVEL": "WARNING"})
        with app.app_context():
            try:
                queue = get_queue()
                wait_for_workers(queue, workers)
                say(f"{count} worker(s): started; billing {due:,} due subscriptions")
                started = time.perf_counter()
                run_id = start_run("generate_monthly_invoices", AS_OF, "bench").id
                report = wait_for_run(run_id, queue, workers, timeout)
                wall_s = time.perf_counter() - started
                figures = check_run(run_id, report, due)
            finally:
                db.session.remove()
                db.engine.dispose()
    finally:
        stop_workers(workers)
        stop(redis_proc)
        if not keep:
            drop(name)
    seconds = (datetime.fromisoformat(report["finished_at"])
               - datetime.fromisoformat(report["started_at"])).total_seconds()
    return {**figures, "workers": count, "seconds": seconds, "wall_s": wall_s, "chunks": report["total"],
            "subs_per_s": figures["subscriptions"] / seconds if seconds else 0.0, "status": report["status"]}


def fan_out(args) -> dict:
    """Load once into a template database, then bill a copy of it on each worker count; report and append."""
    template = f"isp_bench_billing_{os.getpid()}"
    url = database(template)
    runs = []
    try:
        say(f"loading {args.customers:,} customers with generate-test-data (about 3 minutes at 1M)")
        load_s = seed(url, args.customers)
        say(f"loaded in {load_s:.0f}s; making every live subscription due on {AS_OF}, then VACUUM ANALYZE")
        due = make_due(url)
        say(f"{due:,} subscriptions due; this database is the template each run copies")
        with tempfile.TemporaryDirectory(prefix="bench-billing-") as workdir:
            for count in args.workers:
                runs.append(fanned_out_run(template, count, args.chunk, due, Path(workdir), args.timeout, args.keep))
                one = runs[-1]
                say(f"{count} worker(s): {one['subscriptions']:,} subscriptions in {one['seconds']:.2f}s "
                    f"= {one['subs_per_s']:,.0f}/s")
    finally:
        if not args.keep:
            drop(template)
    single = next((r["subs_per_s"] for r in runs if r["workers"] == 1), None)
    for one in runs:
        one["speed_up"] = one["subs_per_s"] / single if single else None
    figures = {"customers": args.customers, "chunk": args.chunk, "load_s": load_s, "due": due, "runs": runs}
    print(json.dumps({**figures, "load_s": round(load_s, 3), "runs": [
        {k: round(v, 3) if isinstance(v, float) else v for k, v in one.items()} for one in runs]}, indent=2))
    for one in runs:
        gain = f", ×{one['speed_up']:.2f} vs 1 worker" if one["speed_up"] else ""
        print(f"billing run on {one['workers']} worker(s): {one['subscriptions']:,} subscriptions in "
              f"{one['seconds']:.2f}s = {one['subs_per_s']:,.0f}/s{gain}")
    if args.results:
        write_fan_out_rows(Path(args.results), figures)
    return figures


FAN_OUT_TITLE = "## Billing run fanned out over RQ workers"
FAN_OUT_HEADER = f"""
{FAN_OUT_TITLE}

`bench/billing_run.py --workers 1,2,4`: every live subscription due on one date, the run started as the API starts
it (`queue.start_run`: a job_runs row, then the coordinating job enqueues one `bill_chunk` job per chunk) on N
`flask rq worker` processes (APP_ENV=production, a private redis-server), each worker count on a fresh copy of the
same database. Seconds: from the run's job_runs row (written just before the enqueue) to its `finished_at` (the
last chunk's commit). Every run succeeded and billed each due subscription exactly once, none due after.

| date | commit | cores | customers | chunk | workers | subscriptions | chunks | s | subs/s | × 1 worker | due after |
|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def write_fan_out_rows(path: Path, f: dict) -> None:
    """Add one row per worker count to the fan-out table of the results file (the section is created once)."""
    rows = [f"| {date.today()} | {commit_id()} | {os.cpu_count()} ({platform.machine()}) | {f['customers']:,} "
            f"| {f['chunk']} | {r['workers']} | {r['subscriptions']:,} | {r['chunks']:,} | {r['seconds']:.2f} "
            f"| {r['subs_per_s']:,.0f} | {format(r['speed_up'], '.2f') + '×' if r['speed_up'] else '–'} "
            f"| {r['due_after_run']} |\n" for r in f["runs"]]
    lines = (path.read_text() if path.exists() else "# Benchmark results\n").splitlines(keepends=True)
    if not any(line.startswith(FAN_OUT_TITLE) for line in lines):
        lines += FAN_OUT_HEADER.splitlines(keepends=True)
    # Rows go at the end of this section's table, even when other sections were appended after it.
    at = next(i for i, line in enumerate(lines) if line.startswith(FAN_OUT_TITLE)) + 1
    while at < len(lines) and not lines[at].startswith("|"):
        at += 1
    while at < len(lines) and lines[at].startswith("|"):
        at += 1
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    lines[at:at] = rows
    path.write_text("".join(lines))


def commit_id() -> str:
    """Return the short commit hash of the working tree (or 'unknown')."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> dict:
    """Run the benchmark and report its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database(s)")
    parser.add_argument("--workers", type=lambda v: [int(n) for n in v.split(",")], default=None,
                        help="fan the run out over this many RQ workers, each count on a fresh copy: e.g. 1,2,4")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one fanned-out run may take")
    args = parser.parse_args(argv)
    if args.workers:
        return fan_out(args)
    name = f"isp_bench_billing_{os.getpid()}"
    url = database(name)
    try:
        load_s = seed(url, args.customers)
        figures = run(url, args.chunk)
    finally:
        if not args.keep:
            drop(name)
    subs = figures["subscriptions"]
    figures.update(
        customers=args.customers, load_s=load_s,
        run_subs_per_s=subs / figures["run_s"] if figures["run_s"] else 0.0,
        floor_subs_per_s=figures["floor_rows"] / figures["floor_s"] if figures["floor_s"] else 0.0,
        ratio=figures["run_s"] / figures["floor_s"] if figures["floor_s"] else 0.0,
    )
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}, indent=2))
    print(f"billing run: {subs:,} subscriptions in {figures['run_s']:.2f}s = {figures['run_subs_per_s']:,.0f}/s; "
          f"set-based INSERT … SELECT: {figures['floor_s']:.3f}s; run/floor = {figures['ratio']:.1f}×")
    if args.results:
        write_row(Path(args.results), figures, args.chunk)
    return figures


def write_row(path: Path, f: dict, chunk: int) -> None:
    """Append one row to the billing table of the results file."""
    header = ("\n## Billing run (bench/billing_run.py)\n\n| date | commit | cores | customers | subscriptions "
              "| chunk | run s | subs/s | INSERT…SELECT s | run ÷ floor | invoices | due after |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    text_ = path.read_text() if path.exists() else "# Benchmark results\n"
    if "## Billing run (bench/billing_run.py)" not in text_:
        text_ += header
    text_ += (f"| {date.today()} | {commit_id()} | {os.cpu_count()} ({platform.machine()}) | {f['customers']:,} "
              f"| {f['subscriptions']:,} | {chunk} | {f['run_s']:.2f} | {f['run_subs_per_s']:,.0f} "
              f"| {f['floor_s']:.3f} | {f['ratio']:.1f}× | {f['invoices']:,} | {f['due_after_run']} |\n")
    path.write_text(text_)


if __name__ == "__main__":
    main()

"""Benchmark the monthly billing run against the same work done as one set-based INSERT … SELECT.

Usage: .venv/bin/python bench/billing_run.py [--customers 100000] [--chunk 1000] [--results bench/RESULTS.md]

Creates a throwaway PostgreSQL database next to BENCH_DATABASE_URL (default the local `test` database's
server), loads customers with `generate-test-data`, makes every live subscription due on one date, then:
1. times the real run (isp_admin.services.billing.bill_customer_range per chunk, one transaction each —
   the same function the RQ workers and the CLI call), and
2. times an INSERT … SELECT that computes the same lines in SQL alone (the floor: no invoices, numbers,
   audit, outbox or credit), rolled back.
Prints subscriptions/s for both and appends a row to the results file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
AS_OF = date(2026, 12, 1)

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


def database(name: str) -> str:
    """(Re)create database `name` on the benchmark server and return its URL."""
    admin = create_engine(BASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(BASE_URL).set(database=name).render_as_string(hide_password=False)


def drop(name: str) -> None:
    """Drop the benchmark database."""
    admin = create_engine(BASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


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
    from isp_admin.services import billing
    from isp_admin.services.audit import SYSTEM, acting_as

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "BILLING_CHUNK_SIZE": chunk, "LOG_LEVEL": "WARNING"})
    with app.app_context(), acting_as(SYSTEM):
        db.session.execute(text("UPDATE subscriptions SET next_bill_date = :d, start_date = LEAST(start_date, :d) "
                                "WHERE status IN ('active', 'pending')"), {"d": AS_OF})
        db.session.execute(text("UPDATE subscriptions SET status = 'active' WHERE status = 'pending'"))
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
    return {"subscriptions": subscriptions, "floor_rows": floor_rows, "floor_s": floor_s, "run_s": run_s,
            "chunks": len(ranges), "invoices": totals["invoices"], "lines": totals["lines"],
            "due_after_run": len(again.invoices)}


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
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args(argv)
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

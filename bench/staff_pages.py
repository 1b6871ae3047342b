"""Staff list pages in-process: CPU µs per page and where it goes (templates, SQL, Flask), no HTTP server.

Usage: .venv/bin/python bench/staff_pages.py [--customers 2000] [--repeats 15] [--profile-rounds 5] [--json FILE]

1. A throwaway PostgreSQL database and Redis, loaded as bench/http_load.py loads them (`flask db upgrade`,
   `flask data generate-test-data --history-months 2`, VACUUM ANALYZE, an admin made with `flask users create`).
2. The app in-process with the server's settings (APP_ENV=production behind `X-Forwarded-Proto: https`, limits
   off, WARNING logs), a test client signed in through the login form.
3. Each page (the customer list under a few sorts, filters and page numbers, a name search, an account-number
   search, the invoice and payment lists) is requested once per round, the pages interleaved round after round;
   each request's CPU time (time.process_time: this process's, so PostgreSQL's own work is not in it) is kept,
   and the median per page reported in µs, with the SQL statements it ran.
4. cProfile (timed by CPU) over a few more rounds of the customer list and search pages: self time per layer
   (bench/profile.py's layers) as a share of the total, and the busiest functions.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this folder leads sys.path, and its profile.py would shadow the standard one cProfile imports.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

from bench import http_load, profile  # noqa: E402  (after the path insert above)

HTTPS = {"X-Forwarded-Proto": "https"}
LIST_PAGES = {
    "customers": "/customers/",
    "customers_account_desc": "/customers/?sort=-account",
    "customers_active_newest": "/customers/?status=active&sort=newest",
    "customers_page_2": "/customers/?page=2",  # a tiny run (tests) has just over one page
    "invoices": "/invoices/",
    "payments": "/payments/",
}
CUSTOMER_PAGES = ("customers", "search_")  # the pages the profile covers: the customer list and its search
TEMPLATES = "templates (Jinja2, MarkupSafe)"
SQL = ("SQLAlchemy (statements, rows, pool)", "PostgreSQL driver (psycopg: send, wait, parse)")
FLASK = "Flask, Werkzeug, extensions"


def make_app(env: dict, workdir: Path):
    """Create the app in-process with the server's environment."""
    from isp_admin import create_app
    from isp_admin.config import load_config

    return create_app(load_config(workdir / "instance", env))


def signed_in_client(app, password: str):
    """Sign the bench admin in through the login form (CSRF token and all); return the client."""
    client = app.test_client()
    page = client.get("/login", headers=HTTPS, base_url="https://localhost")
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.get_data(as_text=True))
    if csrf is None:
        raise RuntimeError(f"the login page gave no CSRF token (status {page.status_code})")
    answer = client.post("/login", data={"email": http_load.ADMIN_EMAIL, "password": password,
                                         "csrf_token": csrf.group(1)},
                         headers={**HTTPS, "Referer": "https://localhost/login"}, base_url="https://localhost")
    if answer.status_code != 302:
        raise RuntimeError(f"sign-in failed (status {answer.status_code})")
    return client


def search_terms(app) -> dict[str, str]:
    """A name part and an account number's tail, taken from the data (as the HTTP benchmark samples them)."""
    from sqlalchemy import text

    from isp_admin.extensions import db

    with app.app_context():
        name, account = db.session.execute(text(
            "SELECT name, account_number FROM customers ORDER BY id LIMIT 1 OFFSET "
            "(SELECT count(*) / 2 FROM customers)")).one()
    return {"search_name": "/customers/?q=" + name.split()[0][:4], "search_account": "/customers/?q=" + account[-5:]}


def fetch(client, path: str) -> bytes:
    """GET a page as a signed-in browser behind the TLS proxy would; fail loudly on anything but 200."""
    response = client.get(path, headers=HTTPS, base_url="https://localhost")
    if response.status_code != 200:
        raise RuntimeError(f"{path} answered {response.status_code}")
    return response.data


def statements_per_page(app, client, pages: dict[str, str]) -> dict[str, int]:
    """The SQL statements each page runs (on a warm cache: the second request)."""
    from sqlalchemy import event

    from isp_admin.extensions import db

    counted: dict[str, int] = {}
    with app.app_context():
        engine = db.engine
    for name, path in pages.items():
        fetch(client, path)
        seen: list[str] = []

        def record(_conn, _cursor, statement, *_args, seen=seen):
            seen.append(statement)

        event.listen(engine, "before_cursor_execute", record)
        try:
            fetch(client, path)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        counted[name] = len(seen)
    return counted


def cpu_per_page(client, pages: dict[str, str], repeats: int) -> dict[str, dict]:
    """Median (and quartiles of) CPU µs per page, the pages interleaved round after round."""
    samples: dict[str, list[float]] = {name: [] for name in pages}
    for path in pages.values():  # warm every page once: templates compiled, caches filled
        fetch(client, path)
    for _ in range(repeats):
        for name, path in pages.items():
            started = time.process_time()
            fetch(client, path)
            samples[name].append((time.process_time() - started) * 1e6)
    out = {}
    for name, values in samples.items():
        quartiles = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
        out[name] = {"median_us": statistics.median(values), "p25_us": quartiles[0], "p75_us": quartiles[2],
                     "samples": len(values)}
    return out


def layer_shares(client, pages: dict[str, str], rounds: int, top: int = 12) -> dict:
    """cProfile self CPU time per layer over `rounds` of `pages`, and the busiest functions."""
    profiler = cProfile.Profile(time.process_time)  # CPU time: waiting on PostgreSQL is not this process's cost
    profiler.enable()
    for _ in range(rounds):
        for path in pages.values():
            fetch(client, path)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # {(file, line, func): (calls, primitive, tottime, cumtime, callers)}
    layers: Counter = Counter()
    functions: Counter = Counter()
    for (file, _line, func), (_calls, _prim, tottime, _cum, _callers) in stats.items():
        layers[profile.layer_of(file)] += tottime
        short = file.split("site-packages/")[-1].split(str(ROOT) + "/")[-1]
        functions[f"{func} ({short})"] += tottime
    total = sum(layers.values()) or 1.0
    share = {name: value / total for name, value in layers.most_common()}
    return {"seconds": total, "layers": share,
            "templates": share.get(TEMPLATES, 0.0), "sql": sum(share.get(name, 0.0) for name in SQL),
            "flask": share.get(FLASK, 0.0),
            "functions": [(name, value / total) for name, value in functions.most_common(top)]}


def markdown(report: dict) -> str:
    """The figures as a Markdown table and the profile's shares."""
    lines = [f"Staff pages in-process, {report['customers']:,} customers, {report['repeats']} interleaved rounds "
             "(CPU µs per request, median [p25–p75]; SQL statements per page):", "",
             "| page | CPU µs | statements |", "|---|---|---|"]
    for name, figures in report["pages"].items():
        lines.append(f"| {name} | {figures['median_us']:,.0f} [{figures['p25_us']:,.0f}–{figures['p75_us']:,.0f}] "
                     f"| {report['statements'][name]} |")
    shares = report["profile"]
    lines += ["", f"cProfile self CPU time (customer list and search): templates {shares['templates']:.0%}, "
              f"SQL {shares['sql']:.0%}, Flask {shares['flask']:.0%}; busiest: "
              + "; ".join(f"`{name}` {share:.1%}" for name, share in shares["functions"][:8])]
    return "\n".join(lines)


def main(argv=None) -> dict:
    """Run the benchmark and report its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds of every page")
    parser.add_argument("--profile-rounds", type=int, default=5)
    parser.add_argument("--json", default="", help="also write the report to this file")
    args = parser.parse_args(argv)
    with http_load.seeded(args.customers, "staff") as data:
        app = make_app(data.env, Path(tempfile.mkdtemp(prefix="isp-staff-bench-", dir=data.workdir)))
        client = signed_in_client(app, data.password)
        pages = {**LIST_PAGES, **search_terms(app)}
        statements = statements_per_page(app, client, pages)
        figures = cpu_per_page(client, pages, args.repeats)
        shares = layer_shares(client, {k: v for k, v in pages.items() if k.startswith(CUSTOMER_PAGES)},
                              args.profile_rounds)
        with app.app_context():
            from isp_admin.extensions import db

            db.engine.dispose()  # the database is dropped next: no connection of ours may hold it
    report = {"customers": args.customers, "repeats": args.repeats, "pages": figures, "statements": statements,
              "profile": shares, "commit": http_load.commit_id()}
    report["markdown"] = markdown(report)
    print(report["markdown"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return report


if __name__ == "__main__":
    main()

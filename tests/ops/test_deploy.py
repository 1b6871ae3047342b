"""The deployment as shipped: gunicorn with deploy/gunicorn.conf.py, APP_ENV=production, two workers, a database
migrated by the release step (`flask db upgrade`), the shared Redis under a prefix of the test's own.

It proves what an operator relies on: the probes answer plain HTTP (no redirect) with the production headers;
/metrics sums every worker's counts exactly (multiprocess mode) and serves the business gauges; the master empties
the metrics directory it starts with and drops a SIGKILLed worker's live gauges while keeping its counts; every
log line is JSON; SIGTERM stops it with exit 0. The last part checks the deploy files agree with all of that.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from http.client import HTTPConnection
from pathlib import Path

import psutil
import pytest
import redis
import yaml
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from isp_admin import create_app
from isp_admin.devserver import free_port
from isp_admin.extensions import db
from isp_admin.models import Invoice
from isp_admin.services.platform.clock import today
from tests.conftest import ROOT, RUN_ID, app_config, create_database, drop_database
from tests.factories import CustomerFactory, PlanFactory, SubscriptionFactory

LOGIN = ("auth.login", "GET")
STALE_LOGINS = 1000  # what a previous master's leftover file claims; counted, it would wreck every total
HTTPS = {"X-Forwarded-Proto": "https"}  # as the TLS-terminating proxy sends it (gunicorn trusts 127.0.0.1)
# Variables read outside isp_admin/config.py: gunicorn's settings, the metrics directory, backups, Flask's CLI.
EXTERNAL_VARIABLES = {"PROMETHEUS_MULTIPROC_DIR", "BACKUP_ENCRYPTION_KEY", "FLASK_APP", "FORWARDED_ALLOW_IPS"}


@dataclass
class Deployment:
    """A running gunicorn and what the test sent it."""

    process: subprocess.Popen
    port: int
    metrics_dir: Path
    log_path: Path
    seeded: dict
    files_at_start: set[str]
    sent: Counter = field(default_factory=Counter)  # (endpoint, method, status) -> requests made
    lock: threading.Lock = field(default_factory=threading.Lock)  # requests are sent from several threads

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        """GET `path` on a connection of its own (Connection: close, so any worker may take the next one)."""
        connection = HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path, headers={"Connection": "close", **(headers or {})})
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def login_page(self, headers: dict | None = None) -> tuple[int, dict, bytes]:
        """GET /login and remember it, so the scraped count can be checked against what was really sent."""
        status, headers_, body = self.get("/login", headers)
        with self.lock:
            self.sent[(*LOGIN, str(status))] += 1
        return status, headers_, body

    def workers(self) -> set[int]:
        """The pids of the master's live workers."""
        return {child.pid for child in psutil.Process(self.process.pid).children()
                if child.status() != psutil.STATUS_ZOMBIE}

    def scrape(self) -> dict[str, list]:
        """Scrape /metrics from 127.0.0.1 over plain HTTP, as Prometheus does; {sample name: [(labels, value)]}."""
        status, headers, body = self.get("/metrics")
        assert status == 200, (status, headers.get("location"), body[:300])
        samples: dict[str, list] = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
        return samples

    def log(self) -> str:
        """Everything gunicorn and the app wrote so far."""
        return self.log_path.read_text()


def value(samples: dict, name: str, **labels) -> float:
    """Sum the samples of `name` whose labels include `labels`."""
    return sum(v for got, v in samples.get(name, []) if all(got.get(k) == str(x) for k, x in labels.items()))


def per_file_logins(path: Path) -> float:
    """The GET /login 200 count held in one worker's counter file."""
    return sum(sample.value for metric in MultiProcessCollector.merge([str(path)]) for sample in metric.samples
               if sample.name == "flask_http_request_total"
               and (sample.labels.get("endpoint"), sample.labels.get("method"), sample.labels.get("status"))
               == (*LOGIN, "200"))


def pool_capacity(deployment: Deployment) -> float:
    """One worker's pool capacity (size + overflow), as that worker last wrote it; the same in every worker."""
    figures = set()
    for pid in deployment.workers():
        for metric in MultiProcessCollector.merge([str(deployment.metrics_dir / f"gauge_livesum_{pid}.db")]):
            figures |= {s.value for s in metric.samples if s.name == "isp_admin_db_pool_capacity" and s.value}
    assert len(figures) == 1, figures
    return figures.pop()


def every_worker_served(deployment: Deployment) -> bool:
    """Send a few concurrent /health/ requests; True once every live worker has counted at least one request."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda _: deployment.get("/health/"), range(8)))
    return all((deployment.metrics_dir / f"counter_{pid}.db").exists() for pid in deployment.workers())


def wait_for(condition, what: str, deployment: Deployment | None = None, timeout: float = 30.0):
    """Poll `condition` until it returns something truthy; fail naming `what` (and showing the log)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if deployment is not None and deployment.process.poll() is not None:
            pytest.fail(f"gunicorn exited ({deployment.process.returncode}) waiting for {what}:\n"
                        f"{deployment.log()[-3000:]}")
        if time.monotonic() > deadline:
            tail = deployment.log()[-3000:] if deployment else ""
            pytest.fail(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.05)


def seed(database_url: str, redis_url: str, instance: Path) -> dict:
    """Write invoices and subscriptions the business gauges must report; return the expected figures."""
    app = create_app(app_config(database_url, redis_url, instance))
    with app.app_context():
        plan = PlanFactory()
        for status in ("active", "active", "active", "suspended"):
            SubscriptionFactory(plan=plan, status=status, customer=CustomerFactory(),
                                suspension_reason="manual" if status == "suspended" else None)
        customer = CustomerFactory()
        day = today()
        for n, (status, total, paid) in enumerate((("open", 5000, 1000), ("overdue", 2500, 500), ("draft", 900, 0))):
            issued = day - timedelta(days=40 if status == "overdue" else 0)
            number = None if status == "draft" else f"DEPLOY-{n}"
            db.session.add(Invoice(customer_id=customer.id, status=status, issue_date=issued, currency="USD",
                                   due_date=issued + timedelta(days=14), number=number,
                                   subtotal_cents=total, total_cents=total, amount_paid_cents=paid))
        db.session.commit()
        db.engine.dispose()
    return {"open": 2, "overdue": 1, "receivables": 4000 + 2000, "active": 3, "suspended": 1}


def prefill(metrics_dir: Path) -> None:
    """Leave what a crashed previous master would: a worker's counter file, plus a file that is not a metric."""
    metrics_dir.mkdir()
    stale = MmapedDict(str(metrics_dir / "counter_999999.db"))
    stale.write_value(mmap_key("flask_http_request_total", "flask_http_request_total",
                               ["endpoint", "method", "status"], [*LOGIN, "200"], "stale"), STALE_LOGINS, 0)
    stale.close()
    (metrics_dir / "README").write_text("not a metric file: the master must leave it alone\n")


def stop(process: subprocess.Popen) -> None:
    """Stop gunicorn and any worker it leaves (only processes this test started)."""
    if process.poll() is None:
        try:
            children = psutil.Process(process.pid).children()
        except psutil.NoSuchProcess:
            children = []
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        for child in children:
            if child.is_running():
                child.kill()


@pytest.fixture(scope="module")
def deployment(backends, tmp_path_factory):
    """Migrate a fresh database, seed it, and run gunicorn on it as production would; stop it afterwards."""
    if not backends["database_url"].startswith("postgresql") or not backends["redis_url"]:
        pytest.skip("the deployment test needs PostgreSQL and Redis")
    tmp = tmp_path_factory.mktemp("deploy")
    tag = f"{RUN_ID}-{uuid.uuid4().hex[:8]}"
    database = f"isp_admin_deploy_{RUN_ID}"
    database_url = create_database(database)
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("GUNICORN_", "PROMETHEUS_", "LOG_", "METRICS_", "RATE", "CACHE_", "RQ_"))}
    env = {
        **inherited,
        "APP_ENV": "production", "PUBLIC_URL": "https://isp.example.com",
        "SECRET_KEY": "deploy-test-secret-key-" + uuid.uuid4().hex,
        "DATABASE_URL": database_url,
        "REDIS_URL": backends["redis_url"],
        # The shared Redis: this deployment's cache, limiter and queue keys carry a prefix no one else uses.
        "CACHE_KEY_PREFIX": f"deploy:{tag}:",
        "RATELIMIT_KEY_PREFIX": f"deploy-rl:{tag}",
        "RQ_QUEUE": f"deploy-{tag}",
        "RATE_LIMIT_ANONYMOUS": "10000/minute",  # every request here comes from 127.0.0.1
        "FLASK_APP": "wsgi.py",
        "PYTHONUNBUFFERED": "1",
    }
    process = None
    try:
        migrate = subprocess.run([sys.executable, "-m", "flask", "db", "upgrade"], cwd=ROOT, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        seeded = seed(database_url, backends["redis_url"], tmp / "instance")
        metrics_dir = tmp / "metrics"
        prefill(metrics_dir)
        port = free_port()
        log_path = tmp / "gunicorn.log"
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"], cwd=ROOT,
                env={**env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "2",
                     "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
                stdout=log, stderr=subprocess.STDOUT)
        running = Deployment(process, port, metrics_dir, log_path, seeded, set())
        wait_for(lambda: len(running.workers()) == 2, "two workers", running)
        # Before any request: what on_starting left in the directory (workers only add files once they count).
        running.files_at_start = {p.name for p in metrics_dir.iterdir()}

        def probe(path: str):
            try:
                return running.get(path)[0] == 200
            except OSError:
                return False

        wait_for(lambda: probe("/health/live/"), "/health/live/ to answer 200", running)
        wait_for(lambda: probe("/health/ready/"), "/health/ready/ to answer 200", running)
        # One worker answering is enough for the probes; the counting test needs both past their boot.
        wait_for(lambda: every_worker_served(running), "both workers to serve", running)
        yield running
    finally:
        if process is not None:
            stop(process)
        drop_database(database)
        connection = redis.Redis.from_url(backends["redis_url"])
        for pattern in (f"*deploy:{tag}:*", f"*deploy-rl:{tag}*", f"*deploy-{tag}*"):
            keys = list(connection.scan_iter(match=pattern, count=1000))
            if keys:
                connection.delete(*keys)
        connection.close()


def test_the_master_empties_a_prefilled_metrics_directory_but_only_of_metric_files(deployment):
    assert "counter_999999.db" not in deployment.files_at_start
    assert not any(name.endswith(".db") for name in deployment.files_at_start - {
        f"gauge_livesum_{pid}.db" for pid in deployment.workers()})
    assert (deployment.metrics_dir / "README").exists()


def test_probes_answer_plain_http_with_production_headers(deployment):
    for path in ("/health/", "/health/live/", "/health/ready/"):
        status, headers, body = deployment.get(path)
        assert status == 200, (path, status, headers.get("location"))  # never a redirect to HTTPS
        assert json.loads(body)["status"] == "ok"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    ready = json.loads(deployment.get("/health/ready/")[2])
    assert ready["checks"]["database"]["ok"] and ready["checks"]["redis"]["ok"]
    # Production proper: pages are forced onto HTTPS, and once there carry HSTS and Secure cookies.
    status, headers, _ = deployment.login_page()
    assert status == 302 and headers["location"].startswith("https://")
    status, headers, _ = deployment.get("/health/", HTTPS)
    assert status == 200
    assert int(re.search(r"max-age=(\d+)", headers["strict-transport-security"]).group(1)) >= 365 * 86400
    status, headers, _ = deployment.login_page(HTTPS)
    assert status == 200
    cookie = headers["set-cookie"].lower()
    assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie


def test_metrics_sum_every_workers_requests_exactly(deployment):
    sent_before = deployment.sent[(*LOGIN, "200")]
    workers = deployment.workers()
    with ThreadPoolExecutor(max_workers=8) as pool:
        for attempt in range(6):  # 40 requests, then more until both workers have taken some
            statuses = list(pool.map(lambda _: deployment.login_page(HTTPS)[0], range(20 if attempt else 40)))
            assert set(statuses) == {200}
            files = {pid: deployment.metrics_dir / f"counter_{pid}.db" for pid in workers}
            if all(path.exists() and per_file_logins(path) > 0 for path in files.values()):
                break
    per_worker = {pid: per_file_logins(path) for pid, path in files.items()}
    sent = deployment.sent[(*LOGIN, "200")]
    assert sent - sent_before >= 40
    assert all(n > 0 for n in per_worker.values()), per_worker  # both workers served: the sum is a real merge

    samples = deployment.scrape()
    for (endpoint, method, status), n in deployment.sent.items():
        assert value(samples, "flask_http_request_total", endpoint=endpoint, method=method, status=status) == n
    assert sum(per_worker.values()) == value(samples, "flask_http_request_total", endpoint="auth.login",
                                             method="GET", status=200) == sent
    requests = sum(deployment.sent.values())
    assert value(samples, "flask_http_request_duration_seconds_count", endpoint="auth.login", method="GET") == requests
    assert value(samples, "flask_http_request_duration_seconds_bucket", endpoint="auth.login", method="GET",
                 le="+Inf") == requests
    assert value(samples, "isp_admin_sql_queries_per_request_count", endpoint="auth.login") == requests

    # Live gauges: each worker's pool, summed over the live workers.
    assert value(samples, "isp_admin_db_pool_capacity") == 2 * pool_capacity(deployment)
    seeded = deployment.seeded
    assert value(samples, "isp_admin_open_invoices") == seeded["open"]
    assert value(samples, "isp_admin_overdue_invoices") == seeded["overdue"]
    assert value(samples, "isp_admin_receivables_cents") == seeded["receivables"]
    assert value(samples, "isp_admin_subscriptions", status="active") == seeded["active"]
    assert value(samples, "isp_admin_subscriptions", status="suspended") == seeded["suspended"]
    assert 0 < value(samples, "isp_admin_memory_used_ratio") < 1
    assert 0 < value(samples, "isp_admin_disk_free_ratio") <= 1


def test_a_killed_worker_is_replaced_and_only_its_live_gauges_go(deployment):
    deployment.login_page(HTTPS)  # at least one count, whichever worker takes it
    before = deployment.workers()
    victim = min(before)
    counter_file = deployment.metrics_dir / f"counter_{victim}.db"
    had_counts = counter_file.exists()
    assert (deployment.metrics_dir / f"gauge_livesum_{victim}.db").exists()

    os.kill(victim, signal.SIGKILL)

    def replaced() -> set[int] | None:
        workers = deployment.workers()
        return workers if len(workers) == 2 and victim not in workers else None

    now = wait_for(replaced, "a replacement worker", deployment)
    assert len(now - before) == 1
    assert not (deployment.metrics_dir / f"gauge_livesum_{victim}.db").exists()  # child_exit dropped it
    assert counter_file.exists() == had_counts  # its requests still happened: counters outlive the worker

    wait_for(lambda: every_worker_served(deployment), "the replacement worker to serve a request", deployment)
    samples = deployment.scrape()
    assert value(samples, "flask_http_request_total", endpoint="auth.login", method="GET",
                 status=200) == deployment.sent[(*LOGIN, "200")]
    # Two live workers' pools: the dead one's gauge would make it three.
    assert value(samples, "isp_admin_db_pool_capacity") == 2 * pool_capacity(deployment)
    assert f'"Worker (pid:{victim}) was sent SIGKILL! Perhaps out of memory?"' in deployment.log()


def test_sigterm_stops_gunicorn_cleanly_and_every_log_line_is_json(deployment):
    deployment.process.send_signal(signal.SIGTERM)
    assert deployment.process.wait(timeout=40) == 0
    lines = [line for line in deployment.log().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line!r}")
    events = [(r.get("logger"), r.get("event")) for r in records]
    assert ("gunicorn.error", "Handling signal: term") in events
    assert ("gunicorn.error", "Shutting down: Master") in events
    assert any(logger == "isp_admin.request" for logger, _ in events)
    assert all("timestamp" in r and "level" in r for r in records)


# --- the deploy files agree with what the test above ran -----------------------------------------------------------

def config_variables() -> set[str]:
    """Every environment variable isp_admin/config.py reads."""
    return set(re.findall(r'env\.get\("([A-Z0-9_]+)"', (ROOT / "isp_admin" / "config.py").read_text()))


def known_variable(name: str) -> bool:
    """Whether the app, gunicorn's config or the image reads `name`."""
    return name in config_variables() or name in EXTERNAL_VARIABLES or name.startswith("GUNICORN_")


def test_the_image_runs_gunicorn_with_the_deploy_config():
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE).group(1)
    assert json.loads(cmd) == ["gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"]
    assert re.search(r"^COPY .* deploy/gunicorn.conf.py ", dockerfile, re.MULTILINE)
    assert "postgresql-client" in dockerfile  # `flask data backup` runs pg_dump inside the image
    assert "/health/live/" in dockerfile  # the HEALTHCHECK probes liveness


def test_compose_runs_migrate_then_web_worker_and_one_scheduler():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "web", "worker", "scheduler"} <= set(services)
    assert services["migrate"]["command"] == ["flask", "db", "upgrade"]
    assert services["web"]["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"]
    for name in ("web", "worker", "scheduler"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["scheduler"]["deploy"]["replicas"] == 1
    # The multiprocess directory is the web's alone: set elsewhere, a CLI or worker dies on the missing directory.
    for name, service in services.items():
        env = service.get("environment", {})
        assert ("PROMETHEUS_MULTIPROC_DIR" in env) == (name == "web"), name
        if name in ("migrate", "web", "worker", "scheduler"):
            assert all(known_variable(key) for key in env), sorted(k for k in env if not known_variable(k))


def test_kubernetes_manifests_probe_health_and_keep_one_scheduler():
    docs = [doc for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
            for doc in yaml.safe_load_all(path.read_text()) if doc]
    by_name = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
    web = by_name[("Deployment", "isp-admin-web")]["spec"]["template"]["spec"]
    container = web["containers"][0]
    assert container["command"] == ["gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready/"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live/"
    assert web["terminationGracePeriodSeconds"] > 30  # longer than gunicorn's graceful timeout
    assert {e["name"] for e in container.get("env", [])} == {"PROMETHEUS_MULTIPROC_DIR"}
    scheduler = by_name[("Deployment", "isp-admin-scheduler")]["spec"]
    assert scheduler["replicas"] == 1 and scheduler["strategy"]["type"] == "Recreate"
    assert by_name[("Job", "isp-admin-migrate")]["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "flask", "db", "upgrade"]
    for kind in ("ConfigMap", "Secret"):
        data = next(doc for doc in docs if doc["kind"] == kind)
        values = data.get("data") or data.get("stringData")
        assert "PROMETHEUS_MULTIPROC_DIR" not in values
        assert all(known_variable(key) for key in values), sorted(k for k in values if not known_variable(k))


def test_the_operations_guide_documents_every_variable():
    guide = (ROOT / "docs" / "operations.md").read_text()
    gunicorn = set(re.findall(r'os\.environ\.get\("([A-Z0-9_]+)"', (ROOT / "deploy" / "gunicorn.conf.py").read_text()))
    assert {"GUNICORN_WORKERS", "GUNICORN_GRACEFUL_TIMEOUT"} <= gunicorn
    missing = sorted(name for name in config_variables() | gunicorn | EXTERNAL_VARIABLES if f"`{name}`" not in guide)
    assert not missing, f"docs/operations.md does not mention {missing}"

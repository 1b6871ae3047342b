"""FreeRADIUS as deployed: the image's configuration passes FreeRADIUS's own check; Compose and Kubernetes give it
every database setting its SQL module reads, on UDP 1812/1813; and the database role of docs/network.md is enough to
authenticate and account a session, and no more."""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, make_url, select, text
from sqlalchemy.exc import ProgrammingError

from isp_admin.extensions import db
from isp_admin.models import RadAcct, RadPostAuth
from isp_admin.services.network import credentials
from tests.conftest import CI, ROOT, RUN_ID
from tests.factories import PlanFactory, SubscriptionFactory
from tests.support import radius

DOCKERFILE = ROOT / "deploy" / "freeradius" / "Dockerfile"
RADDB = "/etc/freeradius/3.0"
# Every $ENV{…} the shipped SQL module reads: the deployments must set each one.
MODULE_VARIABLES = set(re.findall(r"\$ENV\{(\w+)\}", (ROOT / "deploy" / "freeradius" / "sql").read_text()))


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (keyword, arguments), continuation lines joined, comments dropped."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"(?m)^(\w+)\s+(.*)$", joined)]


def needs_freeradius() -> None:
    """Skip where FreeRADIUS is not installed; in CI its absence is a failure (.ci/run installs it)."""
    if not radius.available():
        if CI:
            pytest.fail("FreeRADIUS (freeradius, freeradius-postgresql) is needed in CI")
        pytest.skip("FreeRADIUS is not installed here")


def test_the_image_is_debians_freeradius_with_only_the_shipped_site_and_module():
    steps = instructions()
    assert steps[0] == ("FROM", "debian:bookworm-slim")
    runs = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert re.search(r"apt-get install .*\bfreeradius\b.*\bfreeradius-postgresql\b", runs)
    copies = {tuple(args.split()) for keyword, args in steps if keyword == "COPY"}
    assert ("deploy/freeradius/sql", f"{RADDB}/mods-enabled/sql") in copies
    assert ("deploy/freeradius/site", f"{RADDB}/sites-enabled/isp_admin") in copies
    for removed in ("sites-enabled/default", "sites-enabled/inner-tunnel", "mods-enabled/eap"):
        assert re.search(rf"rm -f [^&]*\b{removed}\b", runs), removed
    assert ("EXPOSE", "1812/udp 1813/udp") in steps
    assert ("USER", "10002:10002") in steps  # Kubernetes' runAsUser below agrees
    assert next(args for keyword, args in steps if keyword == "CMD") == '["freeradius", "-f", "-l", "stdout"]'


def test_the_images_configuration_passes_freeradius_own_check(backends, tmp_path):
    """Build the image's /etc/freeradius/3.0 from this machine's Debian package with the Dockerfile's own steps."""
    needs_freeradius()
    if not backends["database_url"].startswith("postgresql"):
        pytest.skip("FreeRADIUS reads PostgreSQL")
    workdir = Path(tempfile.mkdtemp(prefix="isp-admin-radius-image-"))  # FreeRADIUS may run as nobody: not tmp_path
    try:
        raddb = workdir / "raddb"
        shutil.copytree(radius.SYSTEM_RADDB, raddb, symlinks=True)
        for keyword, args in instructions():
            if keyword == "COPY":
                source, target = args.split()
                shutil.copyfile(ROOT / source, target.replace(RADDB, str(raddb)))
            elif keyword == "RUN" and args.startswith(f"cd {RADDB}"):
                subprocess.run(["sh", "-ec", args.replace(RADDB, shlex.quote(str(raddb)))], check=True)
        conf = (raddb / "radiusd.conf").read_text()
        assert re.search(r"(?m)^\s*reject_delay = 0$", conf)
        assert not re.search(r"(?m)^\s*(user|group) = ", conf), "the image runs as freerad from the start"
        assert sorted(p.name for p in (raddb / "sites-enabled").iterdir()) == ["isp_admin"]
        assert not (raddb / "mods-enabled" / "eap").exists()

        url = make_url(backends["database_url"])
        env = dict(os.environ, RADIUS_DB_HOST=url.host or "127.0.0.1", RADIUS_DB_PORT=str(url.port or 5432),
                   RADIUS_DB_USER=url.username or "postgres", RADIUS_DB_PASSWORD=url.password or "",
                   RADIUS_DB_NAME=url.database)
        command = [str(radius.FREERADIUS), "-C", "-l", "stdout", "-d", str(raddb)]
        if os.geteuid() == 0:  # not as root: as an unprivileged user, as the image does
            subprocess.run(["chown", "-R", "nobody:nogroup", str(workdir)], check=True)
            command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
        # -C instantiates every module: the SQL module connects and reads the routers (nas) as at start.
        check = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_compose_runs_freeradius_from_its_image_with_every_setting_its_module_reads():
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    service = services["freeradius"]
    assert service["build"] == {"context": "..", "dockerfile": "deploy/freeradius/Dockerfile"}
    assert (ROOT / "deploy" / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    assert sorted(MODULE_VARIABLES) == ["RADIUS_DB_HOST", "RADIUS_DB_NAME", "RADIUS_DB_PASSWORD", "RADIUS_DB_PORT",
                                        "RADIUS_DB_USER"]
    env = service["environment"]
    assert set(env) >= MODULE_VARIABLES
    assert env["RADIUS_DB_HOST"] in services and env["RADIUS_DB_NAME"] == services["postgres"]["environment"][
        "POSTGRES_DB"]
    assert set(service["ports"]) == {"1812:1812/udp", "1813:1813/udp"}
    # It reads the views and the routers at start: after the release's migration.
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_kubernetes_runs_freeradius_behind_a_udp_service_that_keeps_the_routers_addresses():
    docs = [doc for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "freeradius.yaml").read_text()) if doc]
    by_kind = {doc["kind"]: doc for doc in docs}
    pod = by_kind["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert set(env) >= MODULE_VARIABLES
    assert env["RADIUS_DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "RADIUS_DB_PASSWORD"
    assert all("value" in env[name] for name in MODULE_VARIABLES - {"RADIUS_DB_PASSWORD"})
    assert pod["spec"]["securityContext"]["runAsUser"] == 10002 and pod["spec"]["securityContext"]["runAsNonRoot"]
    ports = {p["name"]: p for p in container["ports"]}
    assert {(p["containerPort"], p["protocol"]) for p in ports.values()} == {(1812, "UDP"), (1813, "UDP")}
    assert "radclient" in " ".join(container["readinessProbe"]["exec"]["command"])

    service = by_kind["Service"]["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    assert {(p["port"], p["protocol"]) for p in service["ports"]} == {(1812, "UDP"), (1813, "UDP")}
    assert all(p["targetPort"] in ports for p in service["ports"])
    # Routers are known by source address: the Service must not rewrite it.
    assert service["externalTrafficPolicy"] == "Local"


def documented_grants(role: str, database: str) -> list[str]:
    """The statements of docs/network.md's "Database role" block, for this role and database."""
    guide = (ROOT / "docs" / "network.md").read_text()
    block = re.search(r"### Database role\n.*?```sql\n(.*?)```", guide, re.DOTALL).group(1)
    block = re.sub(r"\bfreeradius\b", role, block).replace("DATABASE isp_admin", f'DATABASE "{database}"')
    statements = [re.sub(r"(?m)^--.*\n?", "", chunk).strip() for chunk in block.split(";")]
    return [statement for statement in statements if statement]


def test_the_documented_role_can_authenticate_and_account_and_nothing_more(app, backends):
    needs_freeradius()
    if not backends["database_url"].startswith("postgresql"):
        pytest.skip("the role is PostgreSQL's")
    plan = PlanFactory(code="HOME50", download_mbps=50, upload_mbps=10)
    sub = SubscriptionFactory(plan=plan, pppoe_username="grant-check", static_ip="100.64.7.7")
    db.session.commit()
    password = credentials.set_password(sub.id)
    db.session.commit()

    role = f"isp_radius_{RUN_ID}"
    url = make_url(backends["database_url"])
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    as_role = create_engine(url.set(username=role, password=None))
    workdir = Path(tempfile.mkdtemp(prefix="isp-admin-radius-role-"))
    server = None
    try:
        with admin.connect() as conn:
            drop_role(conn, role)  # left by an interrupted run
            for statement in documented_grants(role, url.database):
                conn.exec_driver_sql(statement)
        server = radius.FreeRadius(url.set(username=role, password=None).render_as_string(hide_password=False),
                                   workdir).start()
        nas = server.client()
        answer = nas.authenticate("grant-check", password, "chap")
        assert answer.accepted and answer.first("Framed-IP-Address") == "100.64.7.7"
        assert answer.first("Mikrotik-Rate-Limit") == "10M/50M"
        assert not nas.authenticate("grant-check", "not-the-password").accepted
        nas.account("Start", "grant-check", "G1", framed_ip="100.64.7.7")
        nas.account("Interim-Update", "grant-check", "G1", framed_ip="100.64.7.7", input_octets=5 * 2**32 + 7,
                    output_octets=123, session_time=300)
        nas.account("Stop", "grant-check", "G1", framed_ip="100.64.7.7", input_octets=5 * 2**32 + 9,
                    output_octets=456, session_time=600)

        db.session.expire_all()
        session = db.session.scalars(select(RadAcct).where(RadAcct.acctsessionid == "G1")).one()
        assert session.acctstoptime is not None and session.acctinputoctets == 5 * 2**32 + 9
        assert session.acctoutputoctets == 456 and session.acctsessiontime == 600
        answers = db.session.execute(select(RadPostAuth.reply, RadPostAuth.pass_)).all()
        assert sorted(answers) == [("Access-Accept", None), ("Access-Reject", None)]

        # And no more: the tables behind the views, money, deleting its own rows.
        for statement in ("SELECT * FROM subscriptions", "SELECT password FROM network_credentials",
                          "SELECT * FROM invoices", "SELECT secret FROM nas WHERE coa_port > 0",
                          "DELETE FROM radacct", "UPDATE radpostauth SET reply = 'x'"):
            with as_role.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
                conn.execute(text(statement))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        as_role.dispose()
        with admin.connect() as conn:
            drop_role(conn, role)
        admin.dispose()


def drop_role(conn, role: str) -> None:
    """Drop the role and its privileges here (and on the database itself), if it exists."""
    if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar():
        conn.execute(text(f'DROP OWNED BY "{role}"'))
        conn.execute(text(f'DROP ROLE "{role}"'))

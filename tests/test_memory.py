"""A web worker stays lean: create_app() and readiness load none of the heavy modules only some paths need.

Each of these costs every gunicorn worker memory for a path it rarely or never takes (bench/memory.py measures
how much): Alembic and Mako (`flask db` only), cryptography's bindings (backups), RQ (queueing a job), WeasyPrint
(a PDF), Rich and Pygments (pulled in by structlog when installed), the test data generator and the other CLI
groups. The things they serve still work, loaded on first use.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from isp_admin.database import include_object, read_migrations
from tests.conftest import ROOT

HEAVY = ("alembic", "flask_migrate", "mako", "cryptography.hazmat", "cryptography.fernet", "rq", "rq_scheduler",
         "weasyprint", "pydyf", "rich", "pygments", "faker", "factory", "isp_admin.cli.",
         "isp_admin.services.sample_data.generator", "isp_admin.services.platform.backup")

WORKER = """
import json, sys
heavy = tuple(sys.argv[1].split(","))

def loaded():
    # "pkg" is the package and its submodules; "pkg." (ending in a dot) its submodules only.
    return sorted(m for m in sys.modules if any(m.startswith(h) if h.endswith(".") else
                                                  m == h or m.startswith(h + ".") for h in heavy))

from isp_admin import create_app
app = create_app()
after_create = loaded()
status = app.test_client().get("/health/ready/").status_code
print(json.dumps({"create_app": after_create, "ready": loaded(), "status": status}))
"""


def _worker_env(backends) -> dict:
    env = {**os.environ, "APP_ENV": "production", "SECRET_KEY": "m" * 48,
           "PUBLIC_URL": "https://isp.example.com", "LOG_FORMAT": "json",
           "DATABASE_URL": backends["database_url"]}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("REDIS_URL", None)
    if backends["redis_url"]:
        env["REDIS_URL"] = backends["redis_url"]
    return env


def test_create_app_and_readiness_load_no_heavy_module(backends):
    done = subprocess.run([sys.executable, "-c", WORKER, ",".join(HEAVY)], cwd=ROOT, env=_worker_env(backends),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200, "readiness answered (schema at the code's head)"
    assert result["create_app"] == [], "create_app() imported modules a web worker should not load"
    assert result["ready"] == [], "/health/ready/ imported modules a web worker should not load"


def test_the_guard_sees_a_heavy_import(backends):
    # The subprocess check above must be able to fail: the same script reports a heavy module once imported.
    script = WORKER.replace("after_create = loaded()", "import rq, alembic\nafter_create = loaded()")
    done = subprocess.run([sys.executable, "-c", script, ",".join(HEAVY)], cwd=ROOT, env=_worker_env(backends),
                          capture_output=True, text=True, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "rq" in result["create_app"] and "alembic" in result["create_app"]


def test_every_cli_group_loads_on_demand_with_the_help_it_is_listed_under(app):
    from isp_admin.cli import GROUPS

    runner = app.test_cli_runner()
    for name, (load, short_help) in GROUPS.items():
        group = load()
        assert (group.help or "").strip().splitlines()[0] == short_help, name
        listed = runner.invoke(args=[name, "--help"])
        assert listed.exit_code == 0, (name, listed.output)
        for command in group.list_commands(None):
            assert command in listed.output, (name, command)
    data = runner.invoke(args=["data", "--help"]).output
    assert "backup" in data and "restore" in data, "the backup commands join the data group"


def test_flask_db_still_runs_from_the_command_line(backends):
    env = {**_worker_env(backends), "FLASK_APP": "wsgi.py"}
    current = subprocess.run([sys.executable, "-m", "flask", "db", "current"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120)
    assert current.returncode == 0, current.stderr
    head, _known = read_migrations(ROOT / "migrations")
    assert f"{head} (head)" in current.stdout, "Alembic read the database's revision: the test schema is at head"


def test_the_first_use_of_the_migrate_extension_puts_flask_migrates_own_in_place(app):
    from flask_migrate import _MigrateConfig

    from isp_admin.database import DeferredMigrate
    from isp_admin.extensions import db

    assert isinstance(app.extensions["migrate"], DeferredMigrate)
    assert app.extensions["migrate"].db is db
    config = app.extensions["migrate"]
    assert isinstance(config, _MigrateConfig)
    assert config.directory == str(ROOT / "migrations") and config.migrate.db is db
    assert config.configure_args == {"compare_type": True, "render_as_batch": True, "include_object": include_object}
    assert "db" in app.cli.commands and app.cli.commands["db"].name == "db"


def _alembic_view(directory):
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(directory))
    scripts = ScriptDirectory.from_config(config)
    return scripts.get_current_head(), frozenset(script.revision for script in scripts.walk_revisions())


def test_the_shipped_migrations_read_as_alembic_reads_them():
    head, known = read_migrations(ROOT / "migrations")
    assert head is not None and head in known
    assert (head, known) == _alembic_view(ROOT / "migrations")


def _script(directory, name: str, revision: str, down, annotated: bool = False) -> None:
    typed = ": str" if annotated else ""
    (directory / "versions" / f"{name}.py").write_text(
        f'"""{name}"""\nfrom alembic import op  # noqa: F401\n\nrevision{typed} = {revision!r}\n'
        f"down_revision{': str | tuple | None' if annotated else ''} = {down!r}\nbranch_labels = None\n"
        "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n")


def test_a_merged_branch_reads_as_alembic_reads_it(tmp_path):
    (tmp_path / "versions").mkdir()
    _script(tmp_path, "0001_a", "a1", None)
    _script(tmp_path, "0002_b", "b2", "a1")
    _script(tmp_path, "0003_c", "c3", "a1", annotated=True)
    _script(tmp_path, "0004_merge", "m4", ("b2", "c3"), annotated=True)
    assert read_migrations(tmp_path) == _alembic_view(tmp_path) == ("m4", frozenset({"a1", "b2", "c3", "m4"}))


def test_two_heads_are_refused_as_alembic_refuses_them(tmp_path):
    from alembic.util import CommandError

    (tmp_path / "versions").mkdir()
    _script(tmp_path, "0001_a", "a1", None)
    _script(tmp_path, "0002_b", "b2", "a1")
    _script(tmp_path, "0003_c", "c3", "a1")
    with pytest.raises(RuntimeError, match="several heads"):
        read_migrations(tmp_path)
    with pytest.raises(CommandError):
        _alembic_view(tmp_path)


def test_no_migrations_have_no_head(tmp_path):
    (tmp_path / "versions").mkdir()
    assert read_migrations(tmp_path) == (None, frozenset())


def test_the_memory_benchmark_measures_a_fresh_interpreter():
    from bench import memory

    figures = memory.fresh_interpreter(top=5)
    plain = figures["plain"]
    assert 0 < plain["start"] < plain["import"] < plain["create_app"]
    assert plain["modules"] > 100 and not set(plain["watched"]) & {"alembic", "rq", "rich", "mako"}
    assert len(figures["modules"]["packages"]) == 5 and all(mb >= 0 for _, mb in figures["modules"]["packages"])
    mine = memory.memory_of(os.getpid())
    assert mine["rss"] >= mine["pss"] >= mine["uss"] > 0

"""The import contracts of setup.cfg [importlinter] hold, and the check catches a module that breaks one.

The breaches are written into a copy of the package, never into the working tree: lint-imports analyses whatever
`isp_admin` it finds first on the path, and a copy in its working directory comes first.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")  # installed beside pytest by the test extra
CONTRACTS = ("Edges above services above models", "No service imports a view, job or command",
             "No model imported by a view", "Platform serves every domain and depends on none",
             "Domains independent except through named interfaces")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    """Run lint-imports in `cwd` with its setup.cfg; the output unwrapped, so an import reads on one line."""
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def copy_with(tmp_path: Path, module: str, source: str) -> Path:
    """Copy the package and its contracts to `tmp_path`, adding `module` (a dotted name) with `source`."""
    shutil.copytree(ROOT / "isp_admin", tmp_path / "isp_admin", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", tmp_path / "setup.cfg")
    (tmp_path / Path(*module.split("."))).with_suffix(".py").write_text(source)
    return tmp_path


def test_the_code_keeps_every_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACTS:  # each one ran: a contract dropped from setup.cfg fails here, not silently
        assert f"{name} KEPT" in result.stdout, result.stdout
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


@pytest.mark.parametrize(("module", "source", "contract", "offence"), [
    ("isp_admin.services.platform.leak", "from isp_admin.web.auth import views\n",
     "No service imports a view, job or command", "isp_admin.services.platform.leak -> isp_admin.web.auth.views"),
    ("isp_admin.web.customers.leak", "from isp_admin.models import Customer\n",
     "No model imported by a view", "isp_admin.web.customers.leak -> isp_admin.models"),
    ("isp_admin.api.leak", "from isp_admin.web import templating\n",
     "Edges above services above models", "isp_admin.api.leak -> isp_admin.web.templating"),
    ("isp_admin.models.leak", "from isp_admin.services.platform import audit\n",
     "Edges above services above models", "isp_admin.models.leak -> isp_admin.services.platform.audit"),
    ("isp_admin.services.identity.leak", "from isp_admin.services.billing import money\n",
     "Domains independent except through named interfaces",
     "isp_admin.services.identity.leak -> isp_admin.services.billing.money"),
], ids=["service-imports-view", "view-imports-model", "api-imports-web", "model-imports-service",
        "domain-bypasses-interfaces"])
def test_a_module_that_breaks_a_contract_fails_the_check(tmp_path, module, source, contract, offence):
    result = lint_imports(copy_with(tmp_path, module, source))
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout, result.stdout
    assert offence in result.stdout, result.stdout


def test_an_import_for_annotations_only_breaks_nothing(tmp_path):
    source = ("from __future__ import annotations\n\nfrom typing import TYPE_CHECKING\n\n"
              "if TYPE_CHECKING:\n    from isp_admin.models import User\n\n\n"
              "def name_of(user: User) -> str:\n    return user.name\n")
    result = lint_imports(copy_with(tmp_path, "isp_admin.web.auth.leak", source))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No model imported by a view KEPT" in result.stdout

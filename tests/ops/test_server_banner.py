"""No `Server` banner through real gunicorn started with the production config (deploy/gunicorn.conf.py)."""
from __future__ import annotations

from tests.conftest import ROOT
from tests.gunicorn_helpers import api_token, call, gunicorn

PRODUCTION_CONF = {"GUNICORN_CMD_ARGS": f"--config {ROOT / 'deploy' / 'gunicorn.conf.py'}"}


def header_names(headers: dict) -> set[str]:
    """The answer's header names, lower-cased (HTTP names are case-insensitive)."""
    return {name.lower() for name in headers}


def test_no_server_banner_on_a_page_an_api_answer_or_a_404(app, backends, tmp_path):
    headers, _ = api_token("readonly", "read")

    with gunicorn(backends, tmp_path / "gunicorn.log", workers=1, threads=2, **PRODUCTION_CONF) as base:
        answers = {"page": call(base, "GET", "/login"), "api": call(base, "GET", "/api/plans/", headers=headers),
                   "404": call(base, "GET", "/no-such-page/")}

    assert {what: status for what, (status, _, _) in answers.items()} == {"page": 200, "api": 200, "404": 404}
    for what, (_, answer_headers, _) in answers.items():
        assert "date" in header_names(answer_headers), what  # the rest of gunicorn's own headers stay
        assert "server" not in header_names(answer_headers), (what, answer_headers)


def test_without_the_production_config_gunicorn_names_itself(app, backends, tmp_path):
    # The control: the check above looks where the banner really is, so it fails if the override goes.
    with gunicorn(backends, tmp_path / "gunicorn.log", workers=1, threads=2) as base:
        _, answer_headers, _ = call(base, "GET", "/login")

    assert {name.lower(): value for name, value in answer_headers.items()}["server"] == "gunicorn"

"""Health probes answer over plain HTTP even in production, where every page else redirects to HTTPS."""
from __future__ import annotations

import pytest

from isp_admin import create_app
from isp_admin.config import load_config
from isp_admin.extensions import db


@pytest.fixture
def production_app(tmp_path, monkeypatch, backends):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "s" * 48)
    monkeypatch.setenv("DATABASE_URL", backends["database_url"])
    monkeypatch.delenv("REDIS_URL", raising=False)
    app = create_app(load_config(tmp_path))
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.mark.parametrize("path", ["/health/", "/health/live/", "/health/ready/"])
def test_probes_answer_plain_http_in_production(production_app, path):
    response = production_app.test_client().get(path)
    assert response.status_code == 200 and response.json["status"] == "ok"


def test_pages_redirect_to_https_in_production(production_app):
    response = production_app.test_client().get("/login")
    assert response.status_code == 302 and response.headers["Location"].startswith("https://")


def test_ready_names_the_database_when_it_is_down(make_app):
    app = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg://postgres@127.0.0.1:1/none")
    response = app.test_client().get("/health/ready/")
    assert response.status_code == 503 and response.json["failing"] == ["database"]

"""Health probes answer over plain HTTP even in production, where every page else redirects to HTTPS."""
from __future__ import annotations

import pytest

from isp_admin import create_app
from isp_admin.config import load_config
from isp_admin.extensions import db


@pytest.fixture
def production_app(tmp_path, monkeypatch, backends):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("PUBLIC_URL", "https://isp.example.com")
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


def test_ready_checks_the_database_redis_and_the_schema_and_says_how_long_each_took(app, client, backends):
    response = client.get("/health/ready/")
    assert response.status_code == 200 and response.json["failing"] == []
    checks = response.json["checks"]
    assert checks["database"]["ok"] is True and checks["database"]["latency_ms"] >= 0
    assert ("redis" in checks) == bool(backends["redis_url"])
    assert response.headers["Cache-Control"] == "no-store"


def test_ready_names_redis_when_it_does_not_answer(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0")
    response = app.test_client().get("/health/ready/")
    assert response.status_code == 503 and response.json["failing"] == ["redis"]
    assert "Connection" in response.json["checks"]["redis"]["error"] and response.headers["Retry-After"] == "5"


def test_ready_refuses_a_schema_behind_the_code(app, client):
    from sqlalchemy import text

    from isp_admin.health.views import migration_head

    head = migration_head()
    db.session.execute(text("UPDATE alembic_version SET version_num = '0002_billing'"))
    db.session.commit()
    try:
        response = client.get("/health/ready/")
        assert response.status_code == 503 and response.json["failing"] == ["database"]
        assert "flask db upgrade" in response.json["checks"]["database"]["error"]
    finally:
        db.session.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
        db.session.commit()
    assert client.get("/health/ready/").status_code == 200


def test_the_detailed_report_is_for_admins_and_health_tokens_only(app, client, login):
    from tests.api.helpers import bearer

    assert client.get("/health/detailed/").status_code == 401
    login("billing")
    assert client.get("/health/detailed/").status_code == 403
    assert client.get("/health/detailed/", headers=bearer("admin", "read")).status_code == 403  # no health scope
    assert client.get("/health/detailed/", headers={"Authorization": "Bearer ispa_nope"}).status_code == 401
    monitor = app.test_client()
    response = monitor.get("/health/detailed/", headers=bearer("admin", "health"))
    assert response.status_code == 200


def test_the_detailed_report_covers_every_component(app, client, login, backends):
    from datetime import date

    from isp_admin.services.platform import job_runs

    run = job_runs.start_run("nightly", date(2026, 11, 1), dry_run=False, triggered_by="test")
    job_runs.fail_run(run.id, "mail server down")
    db.session.commit()
    login("admin")
    body = client.get("/health/detailed/").json
    assert body["status"] == "ok" and body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["revision"]
    assert body["last_nightly_run"]["id"] == run.id and body["last_nightly_run"]["status"] == "failed"
    assert body["last_nightly_run"]["error"] == "mail server down"
    assert body["database_pool"]["kind"] and body["version"] == "0.1.0" and body["uptime_seconds"] >= 0
    assert 0 <= body["host"]["memory_used_ratio"] <= 1 and 0 < body["host"]["disk_free_ratio"] <= 1
    if backends["redis_url"]:
        background = body["background"]
        assert background["ok"] is True and set(background["queue"]) == {"name", "queued", "started", "scheduled",
                                                                          "failed"}
        assert background["workers"]["count"] >= 0 and "alive" in background["scheduler"]


def test_ready_can_report_redis_as_degraded_without_failing(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/0", READY_REQUIRES_REDIS=False)
    response = app.test_client().get("/health/ready/")
    assert response.status_code == 200
    assert (response.json["status"], response.json["failing"], response.json["degraded"]) == ("degraded", [],
                                                                                              ["redis"])


def test_a_schema_ahead_of_the_code_stays_ready_during_a_rolling_upgrade(app, client):
    from sqlalchemy import text

    from isp_admin.health.views import migration_head

    head = migration_head()
    db.session.execute(text("UPDATE alembic_version SET version_num = '0099_from_a_newer_release'"))
    db.session.commit()
    try:
        response = client.get("/health/ready/")
        assert response.status_code == 200 and response.json["failing"] == []
    finally:
        db.session.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
        db.session.commit()

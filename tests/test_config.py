"""Configuration comes from the environment; production refuses to start without its secrets."""
from __future__ import annotations

import pytest

from isp_admin.config import ConfigError, load_config, normalise_database_url


def test_production_needs_a_secret_key(tmp_path):
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        load_config(tmp_path, {"APP_ENV": "production", "DATABASE_URL": "postgresql://db/isp"})


def test_development_generates_a_secret_once_and_keeps_it(tmp_path):
    first = load_config(tmp_path, {})["SECRET_KEY"]
    second = load_config(tmp_path, {})["SECRET_KEY"]
    assert first == second and len(first) >= 32
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_defaults_are_embedded_sqlite_and_in_memory_limits(tmp_path):
    config = load_config(tmp_path, {})
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'isp_admin.sqlite3'}"
    assert config["RATELIMIT_STORAGE_URI"] == "memory://"
    assert config["CACHE_TYPE"] == "SimpleCache"
    assert config["TIMEZONE"] == "UTC" and config["CURRENCY"] == "USD"


def test_redis_url_switches_limits_and_cache_to_redis(tmp_path):
    config = load_config(tmp_path, {"REDIS_URL": "redis://cache:6379/2", "CURRENCY": "kes",
                                    "RATE_LIMIT_ANONYMOUS": "30/minute"})
    assert config["RATELIMIT_STORAGE_URI"] == "redis://cache:6379/2"
    assert config["CACHE_TYPE"] == "RedisCache" and config["CACHE_REDIS_URL"] == "redis://cache:6379/2"
    assert config["CURRENCY"] == "KES" and config["RATE_LIMIT_ANONYMOUS"] == "30/minute"


def test_production_cookies_are_secure(tmp_path):
    config = load_config(tmp_path, {"APP_ENV": "production", "SECRET_KEY": "x" * 40,
                                    "PUBLIC_URL": "https://isp.example.com"})
    assert config["SESSION_COOKIE_SECURE"] and config["REMEMBER_COOKIE_SECURE"]
    assert config["SESSION_COOKIE_HTTPONLY"] and config["REMEMBER_COOKIE_HTTPONLY"]


def test_an_unknown_environment_is_refused(tmp_path):
    with pytest.raises(ConfigError):
        load_config(tmp_path, {"APP_ENV": "staging"})


@pytest.mark.parametrize("url, expected", [
    ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
    ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
    ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ("sqlite:///x.db", "sqlite:///x.db"),
])
def test_database_urls_use_psycopg3(url, expected):
    assert normalise_database_url(url) == expected


def test_production_needs_a_public_url_for_the_links_it_mails(tmp_path):
    base = {"APP_ENV": "production", "SECRET_KEY": "x" * 40}
    with pytest.raises(ConfigError, match="PUBLIC_URL must be set in production"):
        load_config(tmp_path, base)
    with pytest.raises(ConfigError, match="absolute http"):
        load_config(tmp_path, {**base, "PUBLIC_URL": "isp.example.com"})
    assert load_config(tmp_path, {**base, "PUBLIC_URL": "https://isp.example.com/"})["PUBLIC_URL"] == \
        "https://isp.example.com"

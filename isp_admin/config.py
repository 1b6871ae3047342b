"""One configuration, read from the environment; secrets have no default in production."""
from __future__ import annotations

import os
import re
import secrets
from datetime import date, timedelta
from pathlib import Path

ENVIRONMENTS = ("development", "testing", "production")


class ConfigError(RuntimeError):
    """The environment does not describe a runnable configuration."""


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def normalise_database_url(url: str) -> str:
    """Route plain PostgreSQL URLs through psycopg 3, the only PostgreSQL driver we ship."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def engine_options(database_url: str, env: dict[str, str]) -> dict:
    """Pool settings: check a connection before use, and give up fast when PostgreSQL is unreachable."""
    options: dict = {"pool_pre_ping": True}  # a connection dropped by a restart is replaced, not handed out
    if database_url.startswith("postgresql"):
        # A ping is a round trip on every checkout, a fifth of a list request's; PostgreSQL connections are pinged
        # only after a second unused instead (isp_admin.database.ping_when_idle).
        options["pool_pre_ping"] = False
        # Without a connect timeout a host that drops packets holds a request (and a worker thread) for
        # minutes; without a short pool timeout a pool drained by a stuck database queues requests for 30 s.
        # The session speaks UTC whatever the server's TimeZone: SQL-made JSON (isp_admin.services.platform.sqljson)
        # and the ORM then write the same instants the same way.
        options["connect_args"] = {"connect_timeout": int(env.get("DATABASE_CONNECT_TIMEOUT", "5")),
                                   "options": "-c timezone=UTC"}
        options["pool_timeout"] = int(env.get("DATABASE_POOL_TIMEOUT", "10"))
        # One kept connection per server thread. With SQLAlchemy's default of 5, a worker's 8 busy threads kept
        # opening and closing "overflow" connections, a PostgreSQL backend started and ended per request (py-spy
        # found psycopg's connect and close in the ETag benchmark). Connections open lazily, so a process with fewer
        # threads (an RQ worker) holds only what it uses; gunicorn's config sets this to its threads when unset.
        size = env.get("DATABASE_POOL_SIZE", "10")
        if not size.isdigit() or not 1 <= int(size) <= 1000:
            raise ConfigError(f"DATABASE_POOL_SIZE must be a whole number from 1 to 1000, not {size!r}")
        options["pool_size"] = int(size)
    return options


def redis_timeouts(redis_url: str | None, seconds: float) -> dict:
    """Socket timeouts for the cache's and the limiter's Redis, so a Redis that hangs costs a request ~1 s."""
    if not redis_url:
        return {}
    # A Redis answers in well under a millisecond; without a timeout a hung one (or a cut network) would hold
    # every request forever, where the cache and the limiter are built to carry on without it.
    return {"socket_connect_timeout": seconds, "socket_timeout": seconds}


def _development_secret(instance_path: Path) -> str:
    """Generate a secret once and keep it in instance/, so sessions survive restarts in development."""
    path = instance_path / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def load_config(instance_path: str | Path, env: dict[str, str] | None = None) -> dict:
    """Build the Flask config dict from the environment."""
    env = dict(os.environ if env is None else env)
    instance = Path(instance_path)
    instance.mkdir(parents=True, exist_ok=True)
    app_env = env.get("APP_ENV", "development")
    if app_env not in ENVIRONMENTS:
        raise ConfigError(f"APP_ENV must be one of {', '.join(ENVIRONMENTS)}, not {app_env!r}")
    production = app_env == "production"

    secret = env.get("SECRET_KEY")
    if not secret:
        if production:
            raise ConfigError("SECRET_KEY must be set in production")
        secret = _development_secret(instance)

    public_url = (env.get("PUBLIC_URL") or "").strip().rstrip("/") or None
    if public_url and not re.match(r"^https?://[^/\s]+(/\S*)?$", public_url):
        raise ConfigError("PUBLIC_URL must be an absolute http(s) URL such as https://isp.example.com, "
                          f"not {public_url!r}")
    if production and not public_url:
        # Links in mail (password resets, invitations) come from here, never from a request's Host header, which
        # anyone can set: without it production would have no safe way to build them.
        raise ConfigError("PUBLIC_URL must be set in production (e.g. https://isp.example.com): the links in "
                          "password-reset and invitation emails are built from it")

    database_url = normalise_database_url(
        env.get("DATABASE_URL") or f"sqlite:///{instance / 'isp_admin.sqlite3'}"
    )
    redis_url = env.get("REDIS_URL") or None
    redis_timeout = float(env.get("REDIS_SOCKET_TIMEOUT", "1"))
    return {
        "APP_ENV": app_env,
        "PRODUCTION": production,
        "TESTING": app_env == "testing",
        "SECRET_KEY": secret,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(database_url, env),
        "REDIS_URL": redis_url,
        "REDIS_SOCKET_TIMEOUT": redis_timeout,  # seconds, for every Redis call a web request makes
        "TIMEZONE": env.get("TIMEZONE", "UTC"),
        "CURRENCY": env.get("CURRENCY", "USD").upper(),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO").upper(),
        # JSON lines for machines (production default); a readable console line while developing.
        "LOG_FORMAT": env.get("LOG_FORMAT", "json" if production else "console").lower(),
        "SLOW_REQUEST_MS": int(env.get("SLOW_REQUEST_MS", "1000")),
        # /metrics answers private networks (where Prometheus scrapes from), or anyone sending METRICS_TOKEN.
        "METRICS_TOKEN": env.get("METRICS_TOKEN") or None,
        "METRICS_ALLOW_PRIVATE": _bool(env.get("METRICS_ALLOW_PRIVATE"), True),
        # Whether /health/ready/ fails while Redis is down (pages still render without it; jobs cannot queue).
        "READY_REQUIRES_REDIS": _bool(env.get("READY_REQUIRES_REDIS"), True),
        "MAIL_URL": env.get("MAIL_URL") or None,
        "MAIL_FROM": env.get("MAIL_FROM", "ISP Admin <no-reply@localhost>"),
        "MAIL_OUTBOX_DIR": str(instance / "outbox"),
        "PUBLIC_URL": public_url,
        # Authentication
        "PASSWORD_HASH_METHOD": env.get("PASSWORD_HASH_METHOD", "scrypt"),
        # Failed sign-ins are throttled per (account, client address): after MAX_FAILED_LOGINS failures that address
        # waits 1 s, 2 s, 4 s … up to LOCKOUT_MINUTES before its next try; other addresses (the owner) are not held.
        "MAX_FAILED_LOGINS": int(env.get("MAX_FAILED_LOGINS", "5")),
        "LOCKOUT_MINUTES": int(env.get("LOCKOUT_MINUTES", "15")),
        # zxcvbn's score (0-4) a new password must reach; 3 is "safely unguessable" for online attacks.
        "PASSWORD_MIN_SCORE": int(env.get("PASSWORD_MIN_SCORE", "3")),
        # Reset emails one account may be sent per hour, whoever asks; past it requests are dropped silently.
        "PASSWORD_RESET_EMAILS_PER_HOUR": int(env.get("PASSWORD_RESET_EMAILS_PER_HOUR", "3")),
        "PASSWORD_RESET_MAX_AGE": int(env.get("PASSWORD_RESET_MAX_AGE", "3600")),
        # The __Host- prefix makes browsers refuse the cookie unless it is Secure, Path=/ and host-only, so
        # neither a subdomain nor plain HTTP can plant or overwrite it; only HTTPS (production) allows it.
        "SESSION_COOKIE_NAME": "__Host-session" if production else "session",
        "SESSION_COOKIE_SECURE": production,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=12),
        # Same prefix and reasons as the session cookie; Flask-Login sends it with Path=/ and no Domain.
        "REMEMBER_COOKIE_NAME": "__Host-remember_token" if production else "remember_token",
        "REMEMBER_COOKIE_DURATION": timedelta(days=14),
        "REMEMBER_COOKIE_SECURE": production,
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "REMEMBER_COOKIE_REFRESH_EACH_REQUEST": False,
        "WTF_CSRF_ENABLED": _bool(env.get("WTF_CSRF_ENABLED"), True),
        # CORS for the API only, off unless origins are listed: exact origins, comma-separated (isp_admin.security).
        "CORS_ALLOWED_ORIGINS": [origin.strip() for origin in env.get("CORS_ALLOWED_ORIGINS", "").split(",")
                                 if origin.strip()],
        # Rate limits (Flask-Limiter syntax)
        "RATELIMIT_ENABLED": _bool(env.get("RATELIMIT_ENABLED"), True),
        "RATELIMIT_STORAGE_URI": redis_url or "memory://",
        "RATELIMIT_STORAGE_OPTIONS": redis_timeouts(redis_url, redis_timeout),
        "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
        "RATELIMIT_HEADERS_ENABLED": True,
        # A limiter storage failure is logged, never raised: raised after the view it would turn a committed
        # write into a 500 (isp_admin.ratelimit also guards the header hook whatever this says).
        "RATELIMIT_SWALLOW_ERRORS": _bool(env.get("RATELIMIT_SWALLOW_ERRORS"), True),
        "RATELIMIT_KEY_PREFIX": env.get("RATELIMIT_KEY_PREFIX", "isp_admin"),
        "RATE_LIMIT_AUTHENTICATED": env.get("RATE_LIMIT_AUTHENTICATED", "200/minute"),
        "RATE_LIMIT_ANONYMOUS": env.get("RATE_LIMIT_ANONYMOUS", "60/minute"),
        "RATE_LIMIT_LOGIN": env.get("RATE_LIMIT_LOGIN", "10/minute"),
        "RATE_LIMIT_PASSWORD_RESET": env.get("RATE_LIMIT_PASSWORD_RESET", "5/minute"),
        # Caching
        "CACHE_TYPE": "RedisCache" if redis_url else "SimpleCache",
        "CACHE_REDIS_URL": redis_url,
        "CACHE_OPTIONS": redis_timeouts(redis_url, redis_timeout) or None,
        "CACHE_KEY_PREFIX": env.get("CACHE_KEY_PREFIX", "isp_admin:"),
        "CACHE_DEFAULT_TIMEOUT": int(env.get("CACHE_DEFAULT_TIMEOUT", "300")),
        # Front end: Bootstrap from the installed package, never a CDN
        "BOOTSTRAP_SERVE_LOCAL": True,
        # Billing and collections (DESIGN §3)
        "PAYMENT_TERMS_DAYS": int(env.get("PAYMENT_TERMS_DAYS", "14")),
        "GRACE_DAYS": int(env.get("GRACE_DAYS", "7")),
        "REMINDER_SCHEDULE": [int(x) for x in env.get("REMINDER_SCHEDULE", "-3,0,7").split(",") if x.strip()],
        "BILL_WHILE_SUSPENDED": _bool(env.get("BILL_WHILE_SUSPENDED"), False),
        "BILLING_CHUNK_SIZE": int(env.get("BILLING_CHUNK_SIZE", "1000")),
        # Background jobs: the queue name keeps deployments (and test runs) sharing one Redis apart.
        "RQ_QUEUE": env.get("RQ_QUEUE", "isp_admin"),
        "NIGHTLY_CRON": env.get("NIGHTLY_CRON", "30 1 * * *"),
        # A late nightly run replays at most this many missed days (DESIGN §3 "A late run equals the on-time runs").
        "NIGHTLY_CATCH_UP_DAYS": int(env.get("NIGHTLY_CATCH_UP_DAYS", "62")),
        # Bounded values (services/platform/bounds.py): the window every date a person or script sends must fall in, and
        # the longest catch-up a run issues without review.
        "EARLIEST_DATE": date.fromisoformat(env.get("EARLIEST_DATE", "2000-01-01")),  # a typo fails at start
        "SERVICE_HORIZON_DAYS": int(env.get("SERVICE_HORIZON_DAYS", "366")),
        "MAX_CATCH_UP_PERIODS": int(env.get("MAX_CATCH_UP_PERIODS", "12")),
        "DELIVERY_CRON": env.get("DELIVERY_CRON", "*/15 * * * *"),
        # Recovery of lost jobs: a running run older than the lease whose jobs RQ no longer has (or whose started
        # job has not beaten for a lease) is re-queued by the sweep every worker runs; after JOB_MAX_RECOVERIES, failed.
        "JOB_LEASE_SECONDS": int(env.get("JOB_LEASE_SECONDS", "120")),
        "JOB_SWEEP_SECONDS": int(env.get("JOB_SWEEP_SECONDS", "30")),
        "JOB_MAX_RECOVERIES": int(env.get("JOB_MAX_RECOVERIES", "5")),
        # Network truth (services/network): Disconnect/CoA to the NAS, retried with growing waits until answered or
        # NETWORK_COA_MAX_ATTEMPTS; the sweep that sends them runs every minute (NETWORK_CRON), and at once after a
        # change is committed.
        "NETWORK_COA_TIMEOUT": float(env.get("NETWORK_COA_TIMEOUT", "2")),
        "NETWORK_COA_MAX_ATTEMPTS": int(env.get("NETWORK_COA_MAX_ATTEMPTS", "8")),
        "NETWORK_CRON": env.get("NETWORK_CRON", "* * * * *"),
        "NETWORK_KICK": _bool(env.get("NETWORK_KICK"), True),
        "NETWORK_RECONCILE_CRON": env.get("NETWORK_RECONCILE_CRON", "15 2 * * *"),
        # Payments online (services/payments). Secrets come from here only, never the database. A provider is
        # offered to customers when its secrets are set and staff enabled it (payment provider settings page).
        "STRIPE_SECRET_KEY": env.get("STRIPE_SECRET_KEY") or None,
        "STRIPE_WEBHOOK_SECRET": env.get("STRIPE_WEBHOOK_SECRET") or None,
        "STRIPE_API_BASE": (env.get("STRIPE_API_BASE") or "").rstrip("/") or None,  # None: Stripe itself
        "STRIPE_WEBHOOK_TOLERANCE": int(env.get("STRIPE_WEBHOOK_TOLERANCE", "300")),
        "MPESA_CONSUMER_KEY": env.get("MPESA_CONSUMER_KEY") or None,
        "MPESA_CONSUMER_SECRET": env.get("MPESA_CONSUMER_SECRET") or None,
        "MPESA_SHORTCODE": env.get("MPESA_SHORTCODE") or None,
        "MPESA_PASSKEY": env.get("MPESA_PASSKEY") or None,
        "MPESA_BASE_URL": (env.get("MPESA_BASE_URL") or "https://sandbox.safaricom.co.ke").rstrip("/"),
        "PAYMENTS_HTTP_TIMEOUT": float(env.get("PAYMENTS_HTTP_TIMEOUT", "10")),
        # Pending attempts whose notification never came are asked about (status query) after this many minutes,
        # by the sweep at PAYMENTS_POLL_CRON; unanswered after PAYMENTS_EXPIRE_HOURS they expire.
        "PAYMENTS_POLL_CRON": env.get("PAYMENTS_POLL_CRON", "*/10 * * * *"),
        "PAYMENTS_POLL_AFTER_MINUTES": int(env.get("PAYMENTS_POLL_AFTER_MINUTES", "5")),
        "PAYMENTS_EXPIRE_HOURS": int(env.get("PAYMENTS_EXPIRE_HOURS", "24")),
        # The subscriber portal (isp_admin/portal): its own cookie, apart from the staff session's.
        "PORTAL_SESSION_COOKIE_NAME": "__Host-portal" if production else "portal_session",
        "PORTAL_SESSION_LIFETIME": timedelta(hours=int(env.get("PORTAL_SESSION_HOURS", "12"))),
        "PORTAL_PASSWORD_LINK_MAX_AGE": int(env.get("PORTAL_PASSWORD_LINK_MAX_AGE", str(3 * 24 * 3600))),
        # The issuer printed on invoices
        "COMPANY_NAME": env.get("COMPANY_NAME", "ISP Admin"),
        "COMPANY_ADDRESS": env.get("COMPANY_ADDRESS", ""),
        "COMPANY_TAX_ID": env.get("COMPANY_TAX_ID", ""),
        "COMPANY_EMAIL": env.get("COMPANY_EMAIL", ""),
        "PAGE_SIZE": int(env.get("PAGE_SIZE", "50")),
        "MAX_PAGE_SIZE": 200,
        "PROXY_FIX_X_FOR": int(env.get("PROXY_FIX_X_FOR", "0")),
        # The request edge (isp_admin.edge): a larger body is 413 unread (the largest real one, a long invoice,
        # is tens of kB), and JSON nested deeper is 400 before the parser (which recurses) sees it.
        "MAX_CONTENT_LENGTH": int(env.get("MAX_CONTENT_LENGTH", str(1024 * 1024))),
        "JSON_MAX_DEPTH": int(env.get("JSON_MAX_DEPTH", "32")),
        # CSV imports (isp_admin/web/imports): the upload page alone takes a file this large. Every row goes through
        # the services in the request (~10 statements a row), so the rows are bounded to finish well within a
        # worker's timeout (GUNICORN_TIMEOUT); docs/import.md has the measured times.
        "IMPORT_MAX_BYTES": int(env.get("IMPORT_MAX_BYTES", str(5 * 1024 * 1024))),
        "IMPORT_MAX_ROWS": int(env.get("IMPORT_MAX_ROWS", "5000")),
        "BULK_INLINE_LIMIT": int(env.get("BULK_INLINE_LIMIT", "200")),
    }

"""ISP Admin: the application factory."""
from __future__ import annotations

from inspect import iscoroutinefunction
from weakref import WeakKeyDictionary

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from isp_admin.config import load_config


class IspAdmin(Flask):
    """Flask, deciding once per function whether a hook or view is a coroutine function.

    Flask asks inspect.iscoroutinefunction of every before/after/teardown hook and view on every request (about
    twenty-five calls per request here, ~5% of a probe's CPU); a function's kind never changes, so the answer is
    kept. Weakly: a request's own after_this_request closures must not pile up in the cache.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._is_coroutine: WeakKeyDictionary = WeakKeyDictionary()

    def ensure_sync(self, func):
        """Flask's ensure_sync, with the coroutine test remembered per function."""
        try:
            is_coroutine = self._is_coroutine.get(func)
            if is_coroutine is None:
                is_coroutine = self._is_coroutine[func] = iscoroutinefunction(func)
        except TypeError:  # a callable that cannot be weakly referenced: ask each time, as Flask does
            return super().ensure_sync(func)
        return self.async_to_sync(func) if is_coroutine else func


def create_app(config: dict | None = None) -> Flask:
    """Create and configure the app; `config` overrides values read from the environment."""
    app = IspAdmin(
        __name__,
        instance_relative_config=True,
        template_folder="../templates",
        static_folder="../static",
    )
    app.config.update(load_config(app.instance_path))
    if config:
        app.config.update(config)
    register_logging(app)
    register_extensions(app)
    from isp_admin.api import IdConverter

    # Record ids in every path (pages and API) are 1..2^31-1, so a huge id is a 404, never a database error.
    app.url_map.converters["id"] = IdConverter
    register_blueprints(app)
    register_errorhandlers(app)
    register_template_helpers(app)
    register_commands(app)
    if app.config["PROXY_FIX_X_FOR"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXY_FIX_X_FOR"], x_proto=1)
    return app


def register_logging(app: Flask) -> None:
    """Structured logs at LOG_LEVEL: JSON lines (LOG_FORMAT=json) or a console line, secrets redacted."""
    from isp_admin.observability.logs import configure_logging

    configure_logging(app.config["LOG_LEVEL"], json_lines=app.config["LOG_FORMAT"] == "json")
    app.logger.setLevel(app.config["LOG_LEVEL"])


def register_extensions(app: Flask) -> None:
    """Initialise the bare extension instances against this app."""
    from flask_bootstrap import Bootstrap5

    from isp_admin import models  # noqa: F401  (registers every table on the metadata)
    from isp_admin.database import register_database_events, register_migrations
    from isp_admin.errors import register_session_teardown
    from isp_admin.extensions import cache, csrf, db, limiter, login_manager
    from isp_admin.observability.timing import register_timing
    from isp_admin.portal.session import install as install_portal_session
    from isp_admin.ratelimit import guard_limiter_response_hook, register_retry_after_cleanup, start_afresh
    from isp_admin.security import register_cors, register_security_headers
    from isp_admin.web.auth.session import register_user_loader

    register_timing(app)  # first, so its after_request runs last and times every other extension's hooks
    db.init_app(app)
    register_session_teardown(app)  # after db.init_app: teardowns run in reverse, so it runs before Flask-SQLAlchemy's
    register_database_events(app)
    register_migrations(app)
    csrf.init_app(app)
    login_manager.init_app(app)
    register_user_loader(login_manager)
    register_cors(app)  # before the limiter: it answers CORS preflights, which must not spend a client's budget
    register_retry_after_cleanup(app)  # before the limiter: its hook must run after the limiter's
    limiter.init_app(app)
    start_afresh(limiter, app)
    guard_limiter_response_hook(app, limiter)
    cache.init_app(app)
    install_portal_session(app)  # the portal's own cookie under /portal, the staff cookie elsewhere
    register_security_headers(app)  # Talisman (CSP, HSTS, cookie flags), CORP/COOP, no-store when signed in
    Bootstrap5(app)


def register_blueprints(app: Flask) -> None:
    """Register every blueprint, in one explicit list (the API's are listed in isp_admin.api)."""
    from isp_admin.api import register_api
    from isp_admin.autocommit import register_autocommit_reads
    from isp_admin.edge import register_edge
    from isp_admin.extensions import csrf, limiter
    from isp_admin.health.views import bp as health_bp
    from isp_admin.jobs.kick import register_network_kick
    from isp_admin.observability.logs import register_request_logging
    from isp_admin.observability.metrics import register_metrics
    from isp_admin.observability.request_id import register_request_id
    from isp_admin.portal.views import bp as portal_bp
    from isp_admin.web.account.views import bp as account_bp
    from isp_admin.web.admin.views import bp as admin_bp
    from isp_admin.web.auth.session import install_actor
    from isp_admin.web.auth.views import bp as auth_bp
    from isp_admin.web.billing.views import bp as billing_bp
    from isp_admin.web.bulk.views import bp as bulk_bp
    from isp_admin.web.credit_notes.views import bp as credit_notes_bp
    from isp_admin.web.customers.views import bp as customers_bp
    from isp_admin.web.dashboard.views import bp as dashboard_bp
    from isp_admin.web.dev.views import bp as dev_bp
    from isp_admin.web.imports.views import bp as imports_bp
    from isp_admin.web.invoices.views import bp as invoices_bp
    from isp_admin.web.network.views import bp as network_bp
    from isp_admin.web.payments.views import bp as payments_bp
    from isp_admin.web.plans.views import bp as plans_bp
    from isp_admin.web.reports.views import bp as reports_bp
    from isp_admin.web.search.views import bp as search_bp
    from isp_admin.web.subscriptions.views import bp as subscriptions_bp
    from isp_admin.webhooks.views import bp as webhooks_bp

    register_request_id(app)
    register_request_logging(app)  # after the request id: it binds that id to every log line of the request
    install_actor(app)
    register_edge(app)  # before the API's rules: its size and depth checks come before any body is parsed
    for blueprint in (health_bp, auth_bp, dashboard_bp, customers_bp, plans_bp, subscriptions_bp, invoices_bp,
                      payments_bp, billing_bp, reports_bp, network_bp, admin_bp, account_bp, portal_bp, webhooks_bp,
                      credit_notes_bp, search_bp, imports_bp, bulk_bp):
        app.register_blueprint(blueprint)
    app.register_blueprint(dev_bp)  # the development mail viewer: a 404 in production or with MAIL_URL set
    # Providers sign their notifications (or post to a secret URL); there is no form, cookie or user to guard,
    # and a provider's retries must never be refused for a budget meant for people.
    csrf.exempt(webhooks_bp)
    limiter.exempt(webhooks_bp)
    register_network_kick(app)
    register_api(app)
    register_autocommit_reads(app)
    register_metrics(app)


def register_errorhandlers(app: Flask) -> None:
    """Install the error handlers of isp_admin.errors."""
    from isp_admin.errors import register_error_handlers

    register_error_handlers(app)


def register_template_helpers(app: Flask) -> None:
    """Install Jinja filters and globals shared by every template."""
    from isp_admin.web.templating import register_template_helpers as install

    install(app)


def register_commands(app: Flask) -> None:
    """Register the grouped `flask` CLI commands."""
    from isp_admin.cli import register

    register(app)

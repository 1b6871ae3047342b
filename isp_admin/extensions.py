"""Bare extension instances; each is initialised in create_app (never at import time)."""
from flask import current_app
from flask_limiter import Limit, Limiter
from flask_login import LoginManager as BaseLoginManager
from flask_sqlalchemy import SQLAlchemy
from flask_talisman import Talisman
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData

from isp_admin.caching import FailOpenCache
from isp_admin.ratelimit import default_limit, rate_limit_key

# A fixed naming convention keeps constraint names identical on PostgreSQL and SQLite, so Alembic can
# compare, alter and drop them by name.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}



class LoginManager(BaseLoginManager):
    """Flask-Login's manager, deleting the remember-me cookie with the flags it was set with.

    Browsers ignore a Set-Cookie for a __Host- cookie without Secure, its deletion included: Flask-Login's own
    deletion would leave the production remember-me cookie (__Host-remember_token) in place after sign-out.
    """

    def _clear_cookie(self, response):
        config = current_app.config
        response.delete_cookie(config.get("REMEMBER_COOKIE_NAME", "remember_token"),
                               domain=config.get("REMEMBER_COOKIE_DOMAIN"),
                               path=config.get("REMEMBER_COOKIE_PATH", "/"),
                               secure=bool(config.get("REMEMBER_COOKIE_SECURE")),
                               httponly=bool(config.get("REMEMBER_COOKIE_HTTPONLY", True)),
                               samesite=config.get("REMEMBER_COOKIE_SAMESITE"))


db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING_CONVENTION))
login_manager = LoginManager()
limiter = Limiter(
    key_func=rate_limit_key,
    # One budget per client across all routes: a plain default limit is counted per route, which would give
    # a token 200 requests a minute on every endpoint rather than 200 in all.
    default_limits=[Limit(default_limit, scope="client", shared=True, finalized=False)],
)
talisman = Talisman()
cache = FailOpenCache()  # a lost Redis costs speed, never a page
csrf = CSRFProtect()

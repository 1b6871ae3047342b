"""bench/profile.py folds py-spy's collapsed stacks into layers (innermost frame) and inclusive parts."""
from __future__ import annotations

from bench import profile

LIMITER_CALL = ("wsgi_app (flask/app.py:1)", "check_limits (/work/main/isp_admin/ratelimit_fast.py:57)")
AUTH = ("authenticate (/work/main/isp_admin/services/identity/tokens.py:139)",
        "execute (/v/site-packages/sqlalchemy/engine/base.py:1)", "wait (/v/site-packages/psycopg/connection.py:1)")
REDIS = ("hit (/work/main/isp_admin/ratelimit_fast.py:159)", "execute_command (/v/site-packages/redis/client.py:1)")
VIEW = ("wsgi_app (flask/app.py:1)", "list_customers (/work/main/isp_admin/api/customers/views.py:1)",
        "execute (/v/site-packages/sqlalchemy/engine/base.py:1)")


def test_parts_count_inclusively_and_the_identity_loaded_under_the_limiter_is_not_its_cost(tmp_path):
    stacks = {
        (*LIMITER_CALL, *REDIS): 10,   # the limiter's own Redis call: its cost
        (*LIMITER_CALL, *AUTH): 30,    # the token loaded for the limiter's key: the request's, not the limiter's
        VIEW: 60,
    }
    (tmp_path / "1.txt").write_text("".join(f"{';'.join(stack)} {count}\n" for stack, count in stacks.items())
                                    + "garbage line\n")
    summary = profile.summarize(tmp_path)

    assert summary["samples"] == 100
    assert summary["inclusive"][profile.LIMITER] == 0.10
    assert summary["inclusive"]["database (SQLAlchemy and psycopg)"] == 0.90  # under the limiter or not
    assert summary["layers"]["Redis client"] == 0.10
    assert summary["layers"]["PostgreSQL driver (psycopg: send, wait, parse)"] == 0.30
    lines = "\n".join(profile.markdown("API list", summary))
    assert "Inclusive" in lines and "rate limiter (Flask-Limiter and ours, with its Redis call) 10.0%" in lines

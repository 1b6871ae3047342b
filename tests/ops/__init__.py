"""Operations tests: degradation and recovery with real processes (redis-server, PostgreSQL, gunicorn, RQ)."""

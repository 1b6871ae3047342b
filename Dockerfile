# syntax=docker/dockerfile:1
# ISP Admin: build the dependencies in one stage, run as a non-root user in a slim second stage.

# Bookworm pinned: its postgresql-client is 15, the server's major version (a newer pg_dump writes settings an
# older server's pg_restore refuses).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir --upgrade pip
COPY setup.cfg pyproject.toml README.md ./
COPY isp_admin ./isp_admin
# Install the pinned dependencies only; the app itself runs from /app, beside its templates and static files.
RUN /venv/bin/pip install --no-cache-dir . && /venv/bin/pip uninstall --yes isp-admin

FROM python:3.11-slim-bookworm AS runtime
# Pango/HarfBuzz and fonts: the invoice PDFs are rendered from HTML. DejaVu covers Latin, Greek and Cyrillic; Noto
# CJK (Chinese, Japanese, Korean) and Noto Color Emoji cover the rest of the names and addresses customers have
# (without a font for a character, the PDF silently leaves it out). postgresql-client: `flask data backup` and
# `flask data restore` run pg_dump and pg_restore.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b fonts-dejavu-core \
    fonts-noto-cjk fonts-noto-color-emoji postgresql-client \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /home/isp --shell /usr/sbin/nologin isp
WORKDIR /app
COPY --from=build /venv /venv
COPY --chown=root:root wsgi.py setup.cfg ./
COPY --chown=root:root isp_admin ./isp_admin
COPY --chown=root:root migrations ./migrations
COPY --chown=root:root templates ./templates
COPY --chown=root:root static ./static
# Only gunicorn's settings: deploy/ also holds the operator's .env (secrets) and backups, which no image may carry.
COPY --chown=root:root deploy/gunicorn.conf.py ./deploy/gunicorn.conf.py
# The instance folder is the only place the app writes (outbox, dev secrets); everything else is read-only.
# /tmp/metrics exists too, so a one-off `flask …` in a web container (which sets PROMETHEUS_MULTIPROC_DIR) starts.
RUN mkdir -p /app/instance /tmp/metrics && chown isp:isp /app/instance /tmp/metrics
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 APP_ENV=production FLASK_APP=wsgi.py
USER isp
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live/', timeout=2).status != 200)"]
# Migrations are a release step, not a start-up side effect: run `flask db upgrade` once per deploy.
# deploy/gunicorn.conf.py: workers, threads, graceful timeout, JSON logs and the multiprocess metrics hooks (all from
# env: GUNICORN_WORKERS, GUNICORN_THREADS, ...).
CMD ["gunicorn", "-c", "deploy/gunicorn.conf.py", "wsgi:app"]

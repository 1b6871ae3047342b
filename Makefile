# ISP Admin — developer entry points. `make run` and `make test` work from a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
FLASK  := FLASK_APP=wsgi.py $(VENV)/bin/flask

.PHONY: run test install install-test lint migrate demo screenshots clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

## run: install, migrate the embedded SQLite database, load demo data, serve on :5000 with embedded Redis
run: install
	$(FLASK) db upgrade
	$(FLASK) data demo
	$(PY) -m isp_admin.devserver

## test: lint, import contracts, then the whole suite against PostgreSQL and Redis (TEST_DATABASE_URL / TEST_REDIS_URL)
test: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -n 2 --dist loadfile

lint: install-test
	$(VENV)/bin/ruff check .

migrate: install
	$(FLASK) db upgrade

## screenshots: refresh docs/screenshots/ from a running `make run` (needs Debian's chromium)
screenshots: install-test
	$(PY) docs/take_screenshots.py

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache *.egg-info

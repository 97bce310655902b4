# Every target installs what it needs first; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT

.PHONY: install install-dev run test lint bench bench-instructions clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

install-dev: $(VENV)/.installed-dev

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: install
	@mkdir -p var
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py ensure_admin
	@echo "Serving the API and admin on http://127.0.0.1:$(PORT) (admin: http://127.0.0.1:$(PORT)/admin/). Ctrl-C stops everything."
	ELSA_PUBLIC_URL=$${ELSA_PUBLIC_URL:-http://127.0.0.1:$(PORT)} exec $(VENV)/bin/honcho --no-colour -f Procfile start

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy elsa_site audit identity workflows bookmarks bench

test: lint
	$(VENV)/bin/pytest

bench: install-dev
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(PY) bench/run.py

bench-instructions: install-dev
	@command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind)
	$(PY) bench/instructions.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

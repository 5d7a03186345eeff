# Developer entry points. Every target installs what it needs into .venv first.
#
#   make run            the demo: admin on http://127.0.0.1:8000/admin/, SMTP on 127.0.0.1:8025
#                       (installs only the app: no test, lint or typecheck tools)
#   make test           the test suite on SQLite
#   make test-postgres  the test suite on PostgreSQL (127.0.0.1:5432, user postgres)
#   make dist           the wheel and sdist in dist/, metadata checked (twine check)
#   make dist-check     make dist, then each installed into a new venv and run
#   make lint | typecheck | tox | clean | distclean

SHELL := /bin/bash

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
DIST_STAMP := $(VENV)/.installed-dist
EXAMPLE := example_project
# The oldest supported Python, if installed; any python3 otherwise.
BOOTSTRAP_PYTHON := $(shell command -v python3.11 2>/dev/null || command -v python3)

# tox needs python3.12 and python3.13 on PATH; under pyenv only the selected version
# is. Ask pyenv where they live, or look in its default folder.
PYENV_ROOT ?= $(HOME)/.pyenv
EXTRA_PYTHON_BINS := $(strip $(foreach version,3.12 3.13,$(firstword \
	$(wildcard $(addsuffix /bin,$(shell pyenv prefix $(version) 2>/dev/null))) \
	$(lastword $(sort $(wildcard $(PYENV_ROOT)/versions/$(version).*/bin))))))
empty :=
space := $(empty) $(empty)
TOX_PATH := $(subst $(space),:,$(strip $(EXTRA_PYTHON_BINS) $(PATH)))

# Reachability of the PostgreSQL server the tests use (same env vars as tests/settings.py).
define PG_CHECK
import os, sys
import psycopg
params = dict(
    host=os.environ.get("INBOUND_TEST_PG_HOST", "127.0.0.1"),
    port=os.environ.get("INBOUND_TEST_PG_PORT", "5432"),
    user=os.environ.get("INBOUND_TEST_PG_USER", "postgres"),
)
try:
    psycopg.connect(dbname="postgres", connect_timeout=5, **params).close()
except psycopg.Error as error:
    sys.exit(
        "make test-postgres: cannot connect to PostgreSQL at {host}:{port} as {user}: {0}\n"
        "Start it (e.g. pg_ctlcluster <version> main start) or point INBOUND_TEST_PG_HOST, "
        "INBOUND_TEST_PG_PORT and INBOUND_TEST_PG_USER at a running server.".format(
            str(error).strip(), **params
        )
    )
endef
export PG_CHECK

.PHONY: install install-run system-packages postfix run test test-postgres lint typecheck tox dist dist-check clean distclean

# What the demo needs: the app and its dependencies, nothing else.
install-run: $(RUN_STAMP)

$(RUN_STAMP): pyproject.toml
	test -x $(PY) || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=25.1"
	$(PY) -m pip install -e .
	touch $@

# Everything the tests, linters and type checker need, on top.
install: $(STAMP)

$(STAMP): $(RUN_STAMP) pyproject.toml
	$(PY) -m pip install -e . --group test --group lint --group typecheck
	$(PY) -m pip install tox
	touch $@

$(DIST_STAMP): $(RUN_STAMP) pyproject.toml
	$(PY) -m pip install --group dist
	touch $@

run: install-run
	DJANGO_SETTINGS_MODULE=example_project.settings $(PY) $(EXAMPLE)/manage.py migrate --noinput
	DJANGO_SETTINGS_MODULE=example_project.settings $(PY) $(EXAMPLE)/manage.py demo_setup
	exec $(PY) $(EXAMPLE)/run_demo.py

# pytest exits 5 when it collected no tests; that is a failure too.
# Programs the tests run for real (Debian packages), installed when missing.
system-packages:
	bash .ci/system_packages.sh

# Postfix for the LMTP test and the benchmark, which start private instances: the
# package is installed (as root or with sudo) if missing, with no daemon left running
# and no service enabled (benchmarks/install_postfix.sh).
POSTFIX_READY := [ -x /usr/sbin/postfix ] && { command -v smtp-source >/dev/null 2>&1 || [ -x /usr/sbin/smtp-source ]; }
postfix:
	@if $(POSTFIX_READY); then :; else bash benchmarks/install_postfix.sh; fi

test: install system-packages postfix
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: no tests were collected" >&2; fi; \
	exit $$status

test-postgres: install system-packages postfix
	$(PY) -c "$$PG_CHECK"
	INBOUND_TEST_DB=postgres $(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test-postgres: no tests were collected" >&2; fi; \
	exit $$status

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: install
	$(VENV)/bin/mypy django_inbound_smtp tests

# The whole matrix; a missing interpreter fails (tox.ini: skip_missing_interpreters).
tox: install
	PATH="$(TOX_PATH)" $(VENV)/bin/tox $(TOX_ARGS)

dist: $(DIST_STAMP)
	rm -rf dist
	$(PY) -m build --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

dist-check: dist
	$(PY) .ci/dist_smoke.py dist

clean:
	rm -rf .tox .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .hypothesis \
		.coverage htmlcov build dist *.egg-info test-artifacts \
		$(EXAMPLE)/db.sqlite3 $(EXAMPLE)/db.sqlite3-wal $(EXAMPLE)/db.sqlite3-shm $(EXAMPLE)/media
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# clean, and the virtualenv too.
distclean: clean
	rm -rf $(VENV)

# The README's admin screenshots (docs/screenshots/): taken by the browser tests at
# 1280x800 (test-artifacts/screenshots/), then cut to a palette by pngquant (a Debian
# package; only this target needs it).
SCREENSHOTS := message-list message-html message-headers message-source message-attachments \
	inject-form
.PHONY: screenshots
screenshots: install system-packages
	@command -v pngquant >/dev/null || { echo "make screenshots needs pngquant:" \
		"apt-get install pngquant" >&2; exit 1; }
	$(PY) -m pytest -q -m browser tests/test_browser_mailroom.py tests/test_browser_inject.py
	mkdir -p docs/screenshots
	for name in $(SCREENSHOTS); do \
		pngquant --force --strip --quality=60-90 --output docs/screenshots/$$name.png \
			test-artifacts/screenshots/$$name.png || exit 1; \
	done

# The benchmark: manage.py smtpd beside a bare aiosmtpd server and a private Postfix
# (see benchmarks/README.md). Installs Postfix (smtp-source and the server; apt, no
# daemon left running) first if missing. BENCH_ARGS, e.g. BENCH_ARGS="--db sqlite" or
# BENCH_ARGS="--ref HEAD --rounds 3" or BENCH_ARGS="--workers 2".
.PHONY: bench profile
bench: install postfix
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# py-spy profile of ours under the 1 KiB load, with the per-message CPU budget.
# PROFILE_ARGS, e.g. PROFILE_ARGS="--mode store" or PROFILE_ARGS="--ref main".
profile: install postfix
	@test -x $(VENV)/bin/py-spy || $(PY) -m pip install py-spy
	$(PY) benchmarks/profile_ours.py $(PROFILE_ARGS)

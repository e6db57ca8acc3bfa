# Two commands (README): `make run` and `make test`. Both start with .ci/bootstrap.sh,
# which sets up .venv (and .venv-dj6, .venv-dj42), finds or starts MariaDB, installs nginx and wrk,
# and writes the MySQL settings to .run/env.sh. docs/development.md has the details.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

VENV_PYTHON := .venv/bin/python

# Extra pytest arguments for both test passes, e.g. make test PYTEST_ARGS='-x -k pool'
PYTEST_ARGS ?=
export PYTEST_ARGS

# ---- make run ---------------------------------------------------------------------
# What `make run` starts once the environment is ready: the demo site under
# greenpool-serve (2 gevent workers, one port each) behind a project-local nginx
# (config rendered by `greenpool-serve nginx-config`); Ctrl-C stops both.
RUN_CMD ?= $(VENV_PYTHON) -m greenpool.launch.demo_run
# -----------------------------------------------------------------------------------

.PHONY: run test bootstrap stop-private-mariadb

bootstrap:
	.ci/bootstrap.sh

run: bootstrap
	source .run/env.sh && $(RUN_CMD)

test: bootstrap
	.ci/test.sh

# Stops the project-local MariaDB that bootstrap starts when no server was found.
stop-private-mariadb:
	.ci/bootstrap.sh stop-private-mariadb

# ---- make bench -------------------------------------------------------------------
# The server benchmark (bench/run.py, bench/README.md): greenpool-serve side by side with
# gunicorn (sync, gevent, django-db-connection-pool), Tornado and nginx stacks against the
# same MariaDB; JSON lines in bench/results/servers.jsonl, and (full run) its section of
# docs/benchmarks.md and docs/img/servers-*.png, then bench/tail_anatomy.py (where the /read
# tail comes from; its own section). About 35 minutes; needs wrk (bootstrap
# installs it) and the bench extra (gunicorn, django-db-connection-pool, matplotlib).
#   make bench                      # the full run
#   make bench BENCH_ARGS=--quick   # a ~7-minute smoke run, JSON only
BENCH_ARGS ?=
.PHONY: bench

bench: bootstrap
	$(VENV_PYTHON) -m pip install -q -e '.[test,bench]'
	source .run/env.sh && $(VENV_PYTHON) -m bench.run $(BENCH_ARGS)
	source .run/env.sh && $(VENV_PYTHON) -m bench.tail_anatomy $(if $(findstring --quick,$(BENCH_ARGS)),--no-docs --seconds 2,)

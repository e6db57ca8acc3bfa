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
# What `make run` starts once the environment is ready. For now: a pool smoke check.
# The launcher work replaces RUN_CMD to serve the demo site behind nginx
# (greenpool-serve workers + nginx with the config from nginx/).
RUN_CMD ?= $(VENV_PYTHON) -m greenpool.launch --server gevent -w 2 -b 127.0.0.1:8000
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

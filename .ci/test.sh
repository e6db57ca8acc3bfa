#!/usr/bin/env bash
# The whole test suite, as `make test` runs it (after .ci/bootstrap.sh).
#   lint:   ruff check, ruff format --check and mypy (greenpool/)
#   pass 1: .venv (Python 3.11, Django from setup.cfg) runs the default suite
#   pass 2, 3, ...: one per environment of .ci/venvs.sh (Django 6.0, 4.2 LTS, 6.1 on Python 3.13),
#     in its order: the Django-backend tests, when that environment exists
# PYTEST_ARGS is added to every pass, with shell quoting: PYTEST_ARGS='-k "pool and timeout"'.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf '[test] %s\n' "$*"; }
die() { printf '[test] ERROR: %s\n' "$*" >&2; exit 1; }

[ -f .run/env.sh ] || die ".run/env.sh is missing: run .ci/bootstrap.sh (or make test) first"
# shellcheck source=/dev/null
. .run/env.sh

# CI runs the load and fault tests in their bounded form unless told otherwise.
if [ "${CI:-}" = true ] && [ -z "${GREENPOOL_LOAD_SCALE:-}" ]; then
    export GREENPOOL_LOAD_SCALE=ci
fi

# eval, not plain splitting, so that quoted arguments survive (-k "a and b").
eval "EXTRA_ARGS=(${PYTEST_ARGS:-})"

describe() {
    "$1" -c 'import sys, django; print(f"Python {sys.version.split()[0]}, Django {django.get_version()}")'
}

# check_rc PASS_NAME RC: pytest's exit 5 means "collected no tests". That is a failure
# for a plain run (something is wrong with collection) but expected when PYTEST_ARGS
# narrows the run to tests that are all in the other pass.
check_rc() {
    local name="$1" rc="$2"
    if [ "$rc" -eq 5 ]; then
        if [ -n "${PYTEST_ARGS:-}" ]; then
            say "$name: PYTEST_ARGS ($PYTEST_ARGS) selected no tests here; not an error"
            return 0
        fi
        say "$name: pytest collected no tests (exit 5)"
        return 1
    fi
    [ "$rc" -eq 0 ] || say "$name: pytest failed (exit $rc)"
    [ "$rc" -eq 0 ]
}

FAILED=()

# Lint first: seconds, and a failure names the file and line (ruff and mypy, pinned in
# setup.cfg's test extra; their settings are in pyproject.toml and setup.cfg's [mypy]).
say "lint: ruff check, ruff format --check (greenpool tests bench), mypy greenpool"
lint_rc=0
.venv/bin/ruff check greenpool tests bench || lint_rc=1
.venv/bin/ruff format --check greenpool tests bench || lint_rc=1
.venv/bin/mypy greenpool || lint_rc=1
[ "$lint_rc" -eq 0 ] || { say "lint failed: .venv/bin/ruff format greenpool tests bench fixes the format"; FAILED+=("lint"); }

say "pass 1 (default suite): $(describe .venv/bin/python); MySQL $GREENPOOL_MYSQL_USER@$GREENPOOL_MYSQL_HOST:$GREENPOOL_MYSQL_PORT/$GREENPOOL_MYSQL_DATABASE; GREENPOOL_LOAD_SCALE=${GREENPOOL_LOAD_SCALE:-<unset>}"
rc=0
.venv/bin/python -m pytest "${EXTRA_ARGS[@]}" || rc=$?
check_rc "pass 1" "$rc" || FAILED+=("pass 1")

# The Django-backend tests, again in each environment of .ci/venvs.sh.
shopt -s nullglob
BACKEND_PATHS=(tests/test_backend*.py)
[ -d tests/django_tests ] && BACKEND_PATHS+=(tests/django_tests)
shopt -u nullglob

# shellcheck source=venvs.sh
. .ci/venvs.sh
pass=1
for line in "${EXTRA_VENVS[@]}"; do
    pass=$((pass + 1))
    read -r step dir python_version _spec description <<<"$line"
    name="pass $pass ($description)"
    if [ ! -x "$dir/bin/python" ]; then
        if [ "$python_version" = default ]; then
            say "$name: skipped, no $dir (.ci/bootstrap.sh $step makes it)"
        else
            say "$name: skipped, no $dir (it needs Python $python_version from pyenv; .ci/bootstrap.sh $step makes it)"
        fi
    elif [ "${#BACKEND_PATHS[@]}" -eq 0 ]; then
        say "$name: skipped, no Django-backend tests yet (looked for tests/test_backend*.py and tests/django_tests/)"
    else
        say "$name: the Django-backend tests, $(describe "$dir/bin/python"); paths: ${BACKEND_PATHS[*]}"
        rc=0
        "$dir/bin/python" -m pytest "${BACKEND_PATHS[@]}" "${EXTRA_ARGS[@]}" || rc=$?
        check_rc "pass $pass" "$rc" || FAILED+=("pass $pass")
    fi
done

if [ "${#FAILED[@]}" -gt 0 ]; then
    die "failed: ${FAILED[*]}"
fi

#!/usr/bin/env bash
# Idempotent set-up for `make run` and `make test` (and so for CI).
#
#   .ci/bootstrap.sh [STEP...]
#
# Steps (default: all of them, in this order):
#   venv        .venv with python3.11 and `pip install -e '.[test]'` (skipped while setup.cfg is unchanged)
#   venv-dj6    .venv-dj6 with pyenv's Python 3.12 and Django 6.0.x, when that Python exists
#   venv-dj42   .venv-dj42 with the default Python and Django 4.2 LTS
#   venv-dj61   .venv-dj61 with pyenv's Python 3.13 and Django 6.1.x, when that Python exists
#               (the venv-* steps are declared once each, in .ci/venvs.sh)
#   mysql       find or start a MariaDB/MySQL server, write .run/env.sh
#   tools       nginx, wrk, redis-server, prometheus and the MariaDB server binaries (throwaway servers in fault tests)
# Extra steps, never run by default:
#   private-mariadb       start (or reuse) the project-local server in .run/mariadb and use it
#   stop-private-mariadb  stop that server (SIGTERM to the PID in its pid file)
#
# Environment (all optional):
#   GREENPOOL_MYSQL_HOST/_PORT/_USER/_PASSWORD/_DATABASE  use this server; it must answer
#   GREENPOOL_LOCAL_MYSQL_PORT     port probed on 127.0.0.1 when no host is given (3306)
#   GREENPOOL_PRIVATE_MYSQL_PORT   port of the project-local server (3307)
#   GREENPOOL_FORCE_PRIVATE_MYSQL  1 = skip the probe of the local server, use the private one
#   PYTHON                         interpreter for .venv (python3.11, else python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

RUN_DIR="$ROOT/.run"
VENV="$ROOT/.venv"
# shellcheck source=venvs.sh
. "$ROOT/.ci/venvs.sh"  # EXTRA_VENVS: the venv-* steps
PRIVATE_DIR="$RUN_DIR/mariadb"
PRIVATE_PORT="${GREENPOOL_PRIVATE_MYSQL_PORT:-3307}"
LOCAL_PORT="${GREENPOOL_LOCAL_MYSQL_PORT:-3306}"
APT_UPDATED=0

say()  { printf '[bootstrap] %s\n' "$*"; }
warn() { printf '[bootstrap] WARNING: %s\n' "$*" >&2; }
die()  { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# ---------------------------------------------------------------- Debian packages

# Keep package maintainer scripts from starting system services (nginx on :80,
# a second mariadbd on :3306): policy-rc.d answering 101 means "action forbidden".
# An existing policy that already forbids is left alone; any other is put back after.
POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP="$POLICY.greenpool-backup"
POLICY_CREATED=0

forbid_service_starts() {
    if [ -e "$POLICY" ]; then
        local rc=0
        "$POLICY" nginx start >/dev/null 2>&1 || rc=$?
        [ "$rc" -eq 101 ] && return 0
        mv "$POLICY" "$POLICY_BACKUP"
    fi
    printf '#!/bin/sh\n# written by greenpool .ci/bootstrap.sh for the length of an apt-get install\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    POLICY_CREATED=1
}

restore_service_policy() {
    [ "$POLICY_CREATED" -eq 1 ] || return 0
    rm -f "$POLICY"
    if [ -e "$POLICY_BACKUP" ]; then mv "$POLICY_BACKUP" "$POLICY"; fi
    POLICY_CREATED=0
}
trap restore_service_policy EXIT

apt_install() {
    is_root || die "need root to apt-get install $*; install them yourself: apt-get install $*"
    command -v apt-get >/dev/null || die "apt-get not found; install these packages with your package manager: $*"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" -eq 0 ]; then
        say "apt-get update"
        timeout 600 apt-get -o DPkg::Lock::Timeout=120 update -qq || die "apt-get update failed"
        APT_UPDATED=1
    fi
    forbid_service_starts
    say "apt-get install -y $*"
    local rc=0
    timeout 900 apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "$@" || rc=$?
    restore_service_policy
    [ "$rc" -eq 0 ] || die "apt-get install $* failed (exit $rc)"
}

# ensure_tool COMMAND DEBIAN_PACKAGE: install the package when the command is missing.
# Without root it only says what to install (tests that need the tool report it).
ensure_tool() {
    local cmd="$1" pkg="$2" path
    if path="$(PATH="$PATH:/usr/sbin" command -v "$cmd")"; then
        say "$cmd: $path"
        return 0
    fi
    if is_root && command -v apt-get >/dev/null; then
        apt_install "$pkg"
        path="$(PATH="$PATH:/usr/sbin" command -v "$cmd")" \
            || die "installed Debian package $pkg but '$cmd' is still not on PATH"
        say "$cmd: $path (installed from Debian package $pkg)"
    else
        warn "'$cmd' is missing: install the Debian package '$pkg' (apt-get install $pkg)"
    fi
}

# ---------------------------------------------------------------- Python environments

pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    if command -v python3.11 >/dev/null 2>&1; then echo python3.11; else echo python3; fi
}

# A stamp of what the last install was made from, so an unchanged checkout skips pip.
install_stamp() {
    cat setup.cfg pyproject.toml 2>/dev/null | sha256sum | cut -d' ' -f1
    echo "$1"
}

# A newer pip resolves faster and understands newer metadata; an old one still works.
upgrade_pip() {
    "$1" -m pip install -q --upgrade pip || warn "could not upgrade pip in $(dirname "$(dirname "$1")"); going on with $("$1" -m pip --version)"
}

VENV_READY=0
ensure_venv() {
    [ "$VENV_READY" -eq 0 ] || return 0
    VENV_READY=1
    local py; py="$(pick_python)"
    if [ -x "$VENV/bin/python" ]; then
        local have want_version
        have="$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo broken)"
        want_version="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
            || die "'$py' does not run: install python3.11, or set PYTHON"
        if [ "$have" != "$want_version" ]; then
            warn "$VENV has Python $have, not $want_version from $py; recreating it"
            rm -rf "$VENV"
        fi
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        say "creating $VENV with $py ($("$py" --version 2>&1))"
        "$py" -m venv "$VENV" || die "'$py -m venv' failed: install python3.11 with venv, or set PYTHON"
    fi
    local stamp="$VENV/.greenpool-install-stamp" want
    want="$(install_stamp '.[test]')"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say ".venv is up to date ($("$VENV/bin/python" --version))"
        return 0
    fi
    say "installing greenpool into .venv: pip install -e '.[test]'"
    upgrade_pip "$VENV/bin/python"
    "$VENV/bin/python" -m pip install -q -e '.[test]' || die "pip install -e '.[test]' failed in .venv"
    echo "$want" >"$stamp"
}

# find_pyenv_python VERSION: pyenv's newest VERSION.x interpreter, if this machine has one.
find_pyenv_python() {
    local version="$1" prefix=""
    if command -v pyenv >/dev/null 2>&1; then
        prefix="$(pyenv prefix "$version" 2>/dev/null || true)"
    fi
    if [ -z "$prefix" ]; then
        prefix="$(ls -d "$HOME"/.pyenv/versions/"$version".* "$HOME"/.pyenv/versions/"$version" 2>/dev/null | sort -V | tail -n1 || true)"
    fi
    if [ -n "$prefix" ] && [ -x "$prefix/bin/python3" ]; then echo "$prefix/bin/python3"; fi
}

# django_spec PYTHON SPEC: SPEC if the index has a release of its series (the X.Y of
# ">=X.Y"), else the newest Django there is, with a warning.
django_spec() {
    local py="$1" spec="$2" series versions
    series="$(printf '%s\n' "$spec" | sed -n 's/.*>=\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')"
    [ -n "$series" ] || { echo "$spec"; return 0; }
    versions="$("$py" -m pip index versions django 2>/dev/null | sed -n 's/^Available versions: //p' || true)"
    if printf '%s\n' "$versions" | tr ',' '\n' | tr -d ' ' | grep -q "^${series//./\\.}\(\.\|\$\)"; then
        echo "$spec"
    else
        warn "no Django $series.x on the package index for $("$py" --version 2>&1) (seen: ${versions:-nothing}); installing the newest Django instead"
        echo "Django"
    fi
}

# extra_venv_line STEP: the line of .ci/venvs.sh that declares STEP (fails when none does).
extra_venv_line() {
    local line name
    for line in "${EXTRA_VENVS[@]}"; do
        read -r name _ <<<"$line"
        if [ "$name" = "$1" ]; then echo "$line"; return 0; fi
    done
    return 1
}

# ensure_extra_venv STEP: the environment .ci/venvs.sh declares for STEP, with greenpool's
# test extra and its Django (skipped while setup.cfg and the declaration are unchanged).
ensure_extra_venv() {
    local step="$1" line dir python_version spec description py
    line="$(extra_venv_line "$step")" || die "no line for '$step' in .ci/venvs.sh"
    read -r _ dir python_version spec description <<<"$line"
    local venv="$ROOT/$dir"
    if [ "$python_version" = default ]; then
        py="$(command -v python3)" || die "no python3 on PATH for $dir"
    else
        py="$(find_pyenv_python "$python_version")"
        if [ -z "$py" ]; then
            say "no Python $python_version from pyenv: skipping $dir (the $description test pass)"
            return 0
        fi
    fi
    if [ ! -x "$venv/bin/python" ]; then
        say "creating $venv with $py ($("$py" --version 2>&1))"
        "$py" -m venv "$venv" || die "'$py -m venv $venv' failed"
    fi
    local stamp="$venv/.greenpool-install-stamp" want chosen
    want="$(install_stamp ".[test] $spec")"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        say "$dir is up to date ($("$venv/bin/python" --version))"
        return 0
    fi
    upgrade_pip "$venv/bin/python"
    chosen="$(django_spec "$venv/bin/python" "$spec")"
    say "installing greenpool into $dir: pip install -e '.[test]' '$chosen'"
    "$venv/bin/python" -m pip install -q -e '.[test]' "$chosen" \
        || die "pip install -e '.[test]' '$chosen' failed in $dir"
    echo "$want" >"$stamp"
}

# ---------------------------------------------------------------- MySQL / MariaDB

# mysql_ping HOST PORT USER PASSWORD [CREATE_DB]: exit 0 when the server accepts a login.
# With CREATE_DB it also makes sure that database exists. Uses PyMySQL from .venv
# because a mysql command-line client may not be installed.
mysql_ping() {
    [ -x "$VENV/bin/python" ] || die "mysql_ping needs $VENV (run the venv step first)"
    MP_HOST="$1" MP_PORT="$2" MP_USER="$3" MP_PASSWORD="$4" MP_DB="${5:-}" \
    "$VENV/bin/python" - <<'EOF'
import os, sys
import pymysql
try:
    conn = pymysql.connect(host=os.environ["MP_HOST"], port=int(os.environ["MP_PORT"]),
                           user=os.environ["MP_USER"], password=os.environ["MP_PASSWORD"],
                           connect_timeout=3, read_timeout=10, write_timeout=10)
except Exception as exc:  # any failure means "does not answer"; say why
    print(f"  {os.environ['MP_HOST']}:{os.environ['MP_PORT']}: {exc}", file=sys.stderr)
    sys.exit(1)
with conn:
    cur = conn.cursor()
    db = os.environ["MP_DB"]
    if db:
        quoted = "`%s`" % db.replace("`", "``")
        try:
            cur.execute("CREATE DATABASE IF NOT EXISTS " + quoted)
        except pymysql.MySQLError as create_exc:
            # A user without CREATE may still have the database: accept it if it is usable.
            try:
                cur.execute("USE " + quoted)
            except pymysql.MySQLError:
                print(f"  database {db!r} does not exist and cannot be created: {create_exc}",
                      file=sys.stderr)
                sys.exit(2)
    cur.execute("SELECT VERSION()")
    print(cur.fetchone()[0])
EOF
}

# Sets MARIADBD and INSTALL_DB to the server and datadir-initialiser binaries ("" if missing).
# /usr/sbin is looked at too: it is not on every user's PATH.
find_mariadb_bins() {
    MARIADBD="$(PATH="$PATH:/usr/sbin" command -v mariadbd || PATH="$PATH:/usr/sbin" command -v mysqld || true)"
    INSTALL_DB="$(command -v mariadb-install-db || command -v mysql_install_db || true)"
}

# Install mariadb-server when its binaries are missing and we may; returns 1 when
# they are still missing (the caller decides whether that is fatal).
ensure_mariadb_bins() {
    find_mariadb_bins
    if [ -n "$MARIADBD" ] && [ -n "$INSTALL_DB" ]; then return 0; fi
    if is_root && command -v apt-get >/dev/null; then
        apt_install mariadb-server
        find_mariadb_bins
    fi
    [ -n "$MARIADBD" ] && [ -n "$INSTALL_DB" ]
}

# Prints the PID of the running private server; fails when none runs. A stale pid file
# whose number now belongs to another program does not count.
private_pid() {
    local pidfile="$PRIVATE_DIR/mariadbd.pid" pid comm
    [ -f "$pidfile" ] || return 1
    pid="$(cat "$pidfile")"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    case "$comm" in mariadbd|mysqld) echo "$pid" ;; *) return 1 ;; esac
}

# Waits up to 60 s for the private server to accept a login; fails early if PID dies.
wait_private_ready() {
    local pid="$1" log="$PRIVATE_DIR/mariadbd.log" deadline=$((SECONDS + 60))
    until mysql_ping 127.0.0.1 "$PRIVATE_PORT" root "" test >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$log" >&2 || true
            die "private mariadbd (pid $pid) exited during start-up; see $log"
        fi
        [ "$SECONDS" -lt "$deadline" ] \
            || die "private mariadbd (pid $pid) did not answer on 127.0.0.1:$PRIVATE_PORT within 60 s; see $log"
        sleep 0.5
    done
}

# Start the project-local MariaDB (or reuse the one already running) on PRIVATE_PORT.
start_private_mariadb() {
    local pid
    if pid="$(private_pid)"; then
        # Already running (perhaps still starting): wait for it rather than start a second
        # server on the same datadir.
        wait_private_ready "$pid"
        say "reusing the private MariaDB in .run/mariadb (pid $pid, port $PRIVATE_PORT)"
        return 0
    fi
    ensure_mariadb_bins || return 1
    mkdir -p "$PRIVATE_DIR"
    local data="$PRIVATE_DIR/data" log="$PRIVATE_DIR/mariadbd.log"
    local user_opt=()
    if is_root; then user_opt=(--user=root); fi  # mariadbd refuses to run as root without it
    # Small redo log and buffer pool: this server holds test data only.
    local common=(--no-defaults "${user_opt[@]}" --datadir="$data" --skip-name-resolve
                  --innodb-log-file-size=8M --innodb-buffer-pool-size=64M)
    if [ ! -d "$data/mysql" ]; then
        say "initialising $data with $INSTALL_DB"
        rm -rf "$data"
        timeout 120 "$INSTALL_DB" "${common[@]}" --auth-root-authentication-method=normal \
            --skip-test-db >"$PRIVATE_DIR/install.log" 2>&1 \
            || die "$INSTALL_DB failed; see $PRIVATE_DIR/install.log"
    fi
    say "starting private MariaDB: $MARIADBD on 127.0.0.1:$PRIVATE_PORT (log $log)"
    # setsid + closed stdio: the server outlives this script and holds no pipe of make/CI open.
    setsid "$MARIADBD" "${common[@]}" --port="$PRIVATE_PORT" --bind-address=127.0.0.1 \
        --socket="$PRIVATE_DIR/mariadbd.sock" --pid-file="$PRIVATE_DIR/mariadbd.pid" \
        --log-error="$log" </dev/null >>"$PRIVATE_DIR/stdout.log" 2>&1 &
    # setsid execs in place here (a background child is no group leader), so $! is mariadbd.
    pid=$!
    wait_private_ready "$pid"
    say "private MariaDB is up (pid $pid, port $PRIVATE_PORT)"
}

stop_private_mariadb() {
    local pid
    if ! pid="$(private_pid)"; then say "no private MariaDB running"; return 0; fi
    say "stopping private MariaDB (pid $pid)"
    kill -TERM "$pid"
    local deadline=$((SECONDS + 60))
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "private mariadbd (pid $pid) still running 60 s after SIGTERM"
        sleep 0.5
    done
    say "stopped"
}

write_env() {
    mkdir -p "$RUN_DIR"
    {
        echo "# written by .ci/bootstrap.sh: the MySQL server that tests and 'make run' use"
        printf 'export GREENPOOL_MYSQL_HOST=%q\n' "$1"
        printf 'export GREENPOOL_MYSQL_PORT=%q\n' "$2"
        printf 'export GREENPOOL_MYSQL_USER=%q\n' "$3"
        printf 'export GREENPOOL_MYSQL_PASSWORD=%q\n' "$4"
        printf 'export GREENPOOL_MYSQL_DATABASE=%q\n' "$5"
    } >"$RUN_DIR/env.sh"
    say "MySQL: $3@$1:$2/$5 (written to .run/env.sh)"
}

use_private_mariadb() {
    if ! start_private_mariadb; then
        if is_root; then
            die "no MySQL server found and no MariaDB binaries after 'apt-get install mariadb-server'. Set GREENPOOL_MYSQL_HOST (and _PORT, _USER, _PASSWORD, _DATABASE) to a server you have."
        fi
        die "no MySQL server on 127.0.0.1:$LOCAL_PORT and no MariaDB binaries (mariadbd, mariadb-install-db). Either install the Debian package mariadb-server (apt-get install mariadb-server), or set GREENPOOL_MYSQL_HOST (and _PORT, _USER, _PASSWORD, _DATABASE) to a server you have."
    fi
    write_env 127.0.0.1 "$PRIVATE_PORT" root "" test
}

ensure_mysql() {
    local version
    if [ -n "${GREENPOOL_MYSQL_HOST:-}" ]; then
        local host="$GREENPOOL_MYSQL_HOST" port="${GREENPOOL_MYSQL_PORT:-3306}"
        local user="${GREENPOOL_MYSQL_USER:-root}" password="${GREENPOOL_MYSQL_PASSWORD:-}"
        local db="${GREENPOOL_MYSQL_DATABASE:-test}"
        version="$(mysql_ping "$host" "$port" "$user" "$password" "$db")" \
            || die "GREENPOOL_MYSQL_HOST is set but $user@$host:$port does not answer or database '$db' cannot be created (reason above)"
        say "using GREENPOOL_MYSQL_HOST server ($version)"
        write_env "$host" "$port" "$user" "$password" "$db"
        return 0
    fi
    if [ "${GREENPOOL_FORCE_PRIVATE_MYSQL:-0}" != 1 ]; then
        if version="$(mysql_ping 127.0.0.1 "$LOCAL_PORT" root "" test 2>/dev/null)"; then
            say "using the server on 127.0.0.1:$LOCAL_PORT ($version)"
            write_env 127.0.0.1 "$LOCAL_PORT" root "" test
            return 0
        fi
        say "nothing answers on 127.0.0.1:$LOCAL_PORT as root: using a private MariaDB"
    fi
    use_private_mariadb
}

# ---------------------------------------------------------------- tools

ensure_tools() {
    ensure_tool nginx nginx
    ensure_tool wrk wrk
    # tests/test_celery.py starts its own Redis when none answers on 127.0.0.1:6379.
    ensure_tool redis-server redis-server
    # tests/test_metrics_prometheus.py scrapes greenpool-serve with a real Prometheus.
    ensure_tool prometheus prometheus
    # The fault tests start throwaway mariadbd processes, whatever server the suite uses.
    ensure_mariadb_bins \
        || warn "MariaDB binaries missing (mariadbd, mariadb-install-db): install the Debian package mariadb-server; fault tests need them"
}

# ---------------------------------------------------------------- main

main() {
    local steps=("$@") extra=() line name
    for line in "${EXTRA_VENVS[@]}"; do read -r name _ <<<"$line"; extra+=("$name"); done
    [ "${#steps[@]}" -gt 0 ] || steps=(venv "${extra[@]}" mysql tools)
    local step
    for step in "${steps[@]}"; do
        case "$step" in
            venv) ensure_venv ;;
            venv-*) extra_venv_line "$step" >/dev/null || die "unknown step '$step' (.ci/venvs.sh declares ${extra[*]})"
                    ensure_extra_venv "$step" ;;
            mysql) ensure_venv; ensure_mysql ;;
            tools) ensure_tools ;;
            private-mariadb) ensure_venv; use_private_mariadb ;;
            stop-private-mariadb) stop_private_mariadb ;;
            *) die "unknown step '$step' (venv, ${extra[*]}, mysql, tools, private-mariadb, stop-private-mariadb)" ;;
        esac
    done
}

# Sourcing the file (for a test of one function) defines everything and runs nothing.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi

"""A private, throwaway MariaDB server for tests that stop, kill or reconfigure the server.

The shared server (GREENPOOL_MYSQL_*) must never be restarted by a test: other tests and
other developers use it. Fault tests start one of these instead::

    with ThrowawayMariaDB() as db:
        conn = db.connect()
        db.restart()          # graceful: SIGTERM, wait, start again on the same port
        db.kill()             # SIGKILL, as a crash would
        db.start()

Each server has its own temporary datadir (initialised by mariadb-install-db with a
root account that has an empty password over TCP), socket, pid file and logs, listens
on a free port of 127.0.0.1 only, and is removed with its datadir by close().
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
import weakref
from pathlib import Path
from typing import Any

import pymysql

from tests.support import mysqlenv
from tests.support.net import free_port

_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Small redo log and buffer pool: these servers hold a few rows and start often.
_SERVER_OPTIONS = ("--innodb-log-file-size=8M", "--innodb-buffer-pool-size=64M", "--skip-name-resolve")


class MariaDBUnavailable(RuntimeError):
    """The MariaDB server binaries are not installed."""


class MariaDBError(RuntimeError):
    """A throwaway server failed to initialise, start or stop."""


def find_binaries() -> tuple[str, str]:
    """Paths of (mariadbd, mariadb-install-db); MariaDBUnavailable says what to install."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    server = shutil.which("mariadbd", path=search) or shutil.which("mysqld", path=search)
    installer = shutil.which("mariadb-install-db", path=search) or shutil.which("mysql_install_db", path=search)
    if not server or not installer:
        raise MariaDBUnavailable(
            "a throwaway MariaDB needs mariadbd and mariadb-install-db: install the Debian "
            "package mariadb-server (apt-get install mariadb-server; `make test` does it as root)"
        )
    return server, installer


def _die_with_parent_preexec():
    """preexec_fn: have the kernel SIGKILL mariadbd if the test process dies first.

    Without this a pytest killed by a CI timeout leaves servers behind. The kernel sends
    it when the *thread* that started the server exits, so start servers from the main
    thread (gevent greenlets are fine) or pass die_with_parent=False.
    """
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    prctl = libc.prctl

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)

    return preexec


class _Resources:
    """What must be cleaned up even if the owner is garbage-collected without close()."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.tmpdir: str | None = None

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # Nothing more a finaliser can do than say which process is left.
                warnings.warn(f"throwaway mariadbd pid {self.proc.pid} survived SIGKILL for 10 s", stacklevel=2)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


class ThrowawayMariaDB:
    """A mariadbd process owned by the test that made it. Every wait is bounded."""

    user = "root"
    password = ""
    database = "test"
    host = "127.0.0.1"

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_args: tuple[str, ...] | list[str] = (),
        parent_dir: str | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.mariadbd, self.install_db = find_binaries()
        # The port stays the same across restarts, so clients can reconnect to it.
        self.port = port or free_port(self.host)
        self.extra_args = list(extra_args)
        self._parent_dir = parent_dir
        self._die_with_parent = die_with_parent
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, _Resources.cleanup, self._res)

    # ------------------------------------------------------------------ paths and state

    @property
    def tmpdir(self) -> Path:
        if self._res.tmpdir is None:
            # Short prefix: the socket path must stay under the 108-byte sun_path limit.
            self._res.tmpdir = tempfile.mkdtemp(prefix="gp-maria-", dir=self._parent_dir)
        return Path(self._res.tmpdir)

    @property
    def datadir(self) -> Path:
        return self.tmpdir / "data"

    @property
    def socket_path(self) -> Path:
        return self.tmpdir / "mariadbd.sock"

    @property
    def error_log(self) -> Path:
        return self.tmpdir / "mariadbd.err"

    @property
    def console_log(self) -> Path:
        return self.tmpdir / "mariadbd.out"

    @property
    def pid(self) -> int | None:
        return self._res.proc.pid if self._res.proc is not None else None

    @property
    def running(self) -> bool:
        return self._res.proc is not None and self._res.proc.poll() is None

    def params(self) -> dict[str, Any]:
        """Connection parameters, in the same shape as the ``mysql_params`` fixture."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
        }

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<ThrowawayMariaDB {self.host}:{self.port} {state}>"

    # ------------------------------------------------------------------ life cycle

    def _common_args(self) -> list[str]:
        # A temporary directory of its own: in the shared /tmp, a server's internal temporary
        # tables ("#sql-temptable-PID-...") were once gone when it deleted them (errno 2), failing
        # a query mid-test.
        (self.tmpdir / "tmp").mkdir(exist_ok=True)
        args = ["--no-defaults", f"--datadir={self.datadir}", f"--tmpdir={self.tmpdir / 'tmp'}", *_SERVER_OPTIONS]
        if os.geteuid() == 0:
            args.append("--user=root")  # mariadbd refuses to run as root without it
        return args

    def _initialise_datadir(self, timeout: float) -> None:
        if (self.datadir / "mysql").is_dir():
            return
        cmd = [
            self.install_db,
            *self._common_args(),
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        try:
            result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MariaDBError(f"{self.install_db} did not finish within {timeout:.0f} s") from None
        if result.returncode != 0:
            raise MariaDBError(
                f"{self.install_db} failed (exit {result.returncode}) for {self.datadir}:\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
            )

    def start(self, timeout: float = 60.0) -> ThrowawayMariaDB:
        """Start mariadbd and wait until it accepts logins; returns self."""
        if self.running:
            raise MariaDBError(f"{self!r} is already running")
        deadline = time.monotonic() + timeout
        self._initialise_datadir(timeout)
        cmd = [
            self.mariadbd,
            *self._common_args(),
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.tmpdir / 'mariadbd.pid'}",
            f"--log-error={self.error_log}",
            *self.extra_args,
        ]
        with open(self.console_log, "ab") as console:
            self._res.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent_preexec() if self._die_with_parent else None,
            )
        try:
            self._wait_ready(deadline)
            self._ensure_database()
        except BaseException:
            self.kill()  # a half-started server is of no use; don't leave it running
            raise
        return self

    def _wait_ready(self, deadline: float) -> None:
        last_error: Exception | None = None
        while True:
            rc = self._res.proc.poll() if self._res.proc is not None else None
            if rc is not None:
                raise MariaDBError(
                    f"mariadbd exited with status {rc} while starting on port {self.port}; log:\n{self.log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MariaDBError(
                    f"mariadbd (pid {self.pid}) did not accept a login on {self.host}:{self.port} "
                    f"in time (last error: {last_error}); log:\n{self.log_tail()}"
                )
            try:
                conn = self.connect(database=None, connect_timeout=max(1, min(5, int(remaining))))
            except pymysql.MySQLError as exc:
                last_error = exc
                time.sleep(0.1)
                continue
            conn.close()
            return

    def _ensure_database(self) -> None:
        with self.connect(database=None) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{self.database}`")

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown: SIGTERM to the PID we started, then wait up to ``timeout``.

        If it does not exit in time it is SIGKILLed and MariaDBError is raised.
        """
        proc = self._res.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise MariaDBError(
                f"mariadbd (pid {proc.pid}) did not exit within {timeout:.0f} s of SIGTERM; killed it"
            ) from None

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL, as a crash would; the datadir stays, so start() recovers from it."""
        proc = self._res.proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise MariaDBError(f"mariadbd (pid {proc.pid}) still running {timeout:.0f} s after SIGKILL") from None

    def restart(self, timeout: float = 60.0) -> ThrowawayMariaDB:
        """Graceful stop, then start on the same port with the same data."""
        self.stop(timeout)
        return self.start(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the server (killing it if it will not stop) and delete its datadir."""
        try:
            self.stop(timeout)
        finally:
            self._finalizer()  # kills whatever is left and removes the temporary directory

    def __enter__(self) -> ThrowawayMariaDB:
        if not self.running:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ queries

    def connect(self, **overrides: Any) -> pymysql.connections.Connection:
        """A fresh autocommit PyMySQL connection to this server (as root)."""
        return mysqlenv.connect(self.params(), **overrides)

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def set_global(self, name: str, value: Any) -> None:
        """SET GLOBAL name = value (e.g. wait_timeout, max_connections)."""
        if not _VARIABLE_NAME.match(name):
            raise ValueError(f"not a server variable name: {name!r}")
        self._query(f"SET GLOBAL {name} = %s", (value,))

    def get_global(self, name: str) -> str:
        rows = self._query("SHOW GLOBAL VARIABLES LIKE %s", (name,))
        if not rows:
            raise KeyError(f"no global variable {name!r} on {self!r}")
        return rows[0][1]

    def connection_count(self, user: str | None = None) -> int:
        """Client connections open on the server, not counting the one asking.

        With ``user``, only that user's connections (from the process list).
        """
        sql = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID() AND COMMAND <> 'Daemon'"
        args: tuple[Any, ...] = ()
        if user is not None:
            sql += " AND USER = %s"
            args = (user,)
        return int(self._query(sql, args)[0][0])

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's error and console logs, for failure messages."""
        parts = []
        for path in (self.error_log, self.console_log):
            try:
                text = path.read_text(errors="replace")
            except FileNotFoundError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            if tail:
                parts.append(f"--- {path.name}\n{tail}")
        return "\n".join(parts) or "(no log written)"


def throwaway_or_skip() -> ThrowawayMariaDB:
    """A ThrowawayMariaDB, which ``with`` starts and then stops. Without
    MariaDB binaries the test is skipped on a developer machine but fails in CI, where
    `make test` installs them."""
    import pytest

    try:
        return ThrowawayMariaDB()
    except MariaDBUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))

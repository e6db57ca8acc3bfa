"""Fixtures of the fault suite: one throwaway mariadbd for the package, a database of
each test's own on it, and greenpool-serve processes serving the demo site on it.

The throwaway server may be stopped, killed and reconfigured by any test here (never
the shared server): ``db`` puts back what a test changed (the server running, the
globals it set through ``db.set_global``) before the next test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from tests.support.mariadb import ThrowawayMariaDB, throwaway_or_skip
from tests.support.serve import ServeProcess, scaled

SERVERS = ["gevent", "tornado"]
#: For tests that only measure behaviour the docs describe (health checks off):
#: both servers in the full run, one in the bounded CI run.
DOC_SERVERS = scaled(SERVERS, ["gevent"])


@pytest.fixture(scope="package")
def faultdb() -> Iterator[ThrowawayMariaDB]:
    with throwaway_or_skip() as server:
        yield server


class FaultDB:
    """The throwaway server as one test sees it: its database, its globals."""

    def __init__(self, server: ThrowawayMariaDB, database: str) -> None:
        self.server = server
        self.database = database
        self._saved_globals: dict[str, str] = {}
        self.users: list[str] = []

    def params(self, **overrides: Any) -> dict[str, Any]:
        return {**self.server.params(), "database": self.database, **overrides}

    def set_global(self, name: str, value: Any) -> None:
        """SET GLOBAL, put back after the test. Applies to sessions opened after it."""
        if name not in self._saved_globals:
            self._saved_globals[name] = self.server.get_global(name)
        self.server.set_global(name, value)

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self.server.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def connection_ids(self, user: str | None = None) -> list[int]:
        """Server thread ids of the client connections using this test's database."""
        sql = "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()"
        args: tuple = (self.database,)
        if user:
            sql += " AND USER = %s"
            args += (user,)
        return [row[0] for row in self.query(sql, args)]

    def connection_count(self) -> int:
        return len(self.connection_ids())

    def kill_all(self) -> list[int]:
        """KILL CONNECTION every connection using this test's database."""
        ids = self.connection_ids()
        with self.server.connect() as conn, conn.cursor() as cur:
            for thread_id in ids:
                try:
                    cur.execute(f"KILL CONNECTION {int(thread_id)}")
                except pymysql.err.OperationalError as exc:
                    if exc.args[0] != 1094:  # Unknown thread id: it went meanwhile
                        raise
        return ids

    def wait_connection_count(self, predicate: Any, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        count = self.connection_count()
        while not predicate(count) and time.monotonic() < deadline:
            time.sleep(0.1)
            count = self.connection_count()
        return count

    def create_user(self, password: str) -> str:
        """A user of this test with ``password``, allowed everything on its database."""
        user = f"gp_{uuid.uuid4().hex[:10]}"
        with self.server.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY %s", (password,))
            cur.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY %s", (password,))
            cur.execute(f"GRANT ALL ON `{self.database}`.* TO '{user}'@'127.0.0.1'")
            cur.execute(f"GRANT ALL ON `{self.database}`.* TO '{user}'@'localhost'")
        self.users.append(user)
        return user

    def cleanup(self) -> None:
        if not self.server.running:
            self.server.start()
        for name, value in self._saved_globals.items():
            self.server.set_global(name, int(value) if value.isdigit() else value)
        with self.server.connect() as conn, conn.cursor() as cur:
            for user in self.users:
                cur.execute(f"DROP USER IF EXISTS '{user}'@'127.0.0.1', '{user}'@'localhost'")
            cur.execute(f"DROP DATABASE IF EXISTS `{self.database}`")


@pytest.fixture
def db(faultdb: ThrowawayMariaDB) -> Iterator[FaultDB]:
    """A database of this test's own on the throwaway server (running at the start)."""
    if not faultdb.running:
        faultdb.start()
    name = f"gp_fault_{uuid.uuid4().hex[:10]}"
    with faultdb.connect() as conn, conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    state = FaultDB(faultdb, name)
    try:
        yield state
    finally:
        state.cleanup()


@pytest.fixture
def serve(tmp_path, db: FaultDB):
    """serve(*args, server=..., workers=..., env=..., wait=True, db_params=...) -> a
    started ServeProcess on this test's database, stopped at the end of the test."""
    started: list[ServeProcess] = []

    def make(*args: str, wait: bool = True, db_params: dict[str, Any] | None = None, **kwargs: Any) -> ServeProcess:
        proc = ServeProcess(tmp_path, db_params or db.params(), *args, **kwargs)
        started.append(proc)
        return proc.start(wait=wait)

    yield make
    for proc in started:
        proc.stop()


def demo_env(**values: Any) -> dict[str, str]:
    """GREENPOOL_DEMO_* environment from keyword arguments: pool_max_size=2 ->
    GREENPOOL_DEMO_POOL_MAX_SIZE=2."""
    return {f"GREENPOOL_DEMO_{key.upper()}": str(value) for key, value in values.items()}

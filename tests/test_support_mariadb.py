"""ThrowawayMariaDB with real mariadbd processes: start, query, restart, kill, stop."""

import os
import time

import pytest

# Imported from pymysql.err, not used as `pymysql.err.OperationalError`: once Django's MySQL
# backend has loaded (pymysql.install_as_MySQLdb), the attribute pymysql.err points to a
# second copy of the module (MySQLdb.err) whose classes PyMySQL never raises.
from pymysql.err import OperationalError

from tests.support.mariadb import MariaDBError, ThrowawayMariaDB
from tests.support.net import port_is_open

pytestmark = pytest.mark.mysql


def _select(db, sql, args=()):
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def test_query_restart_query(throwaway_mariadb):
    db = throwaway_mariadb
    assert _select(db, "SELECT 1, DATABASE()") == ((1, "test"),)
    with db.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS kept (id INT PRIMARY KEY)")
        cur.execute("REPLACE INTO kept VALUES (7)")
    old_pid = db.pid

    db.restart(timeout=60)

    assert db.pid != old_pid
    assert db.port == db.params()["port"]  # same port: clients reconnect to the same address
    assert _select(db, "SELECT id FROM kept") == ((7,),)  # same data


def test_connection_dropped_by_restart(throwaway_mariadb):
    db = throwaway_mariadb
    conn = db.connect()
    db.restart(timeout=60)
    with pytest.raises(OperationalError):
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    conn.close()


def test_kill_then_start_recovers(throwaway_mariadb):
    db = throwaway_mariadb
    pid = db.pid
    db.kill()
    assert not db.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    db.start(timeout=60)
    assert _select(db, "SELECT 1") == ((1,),)


def test_set_global_and_connection_count(throwaway_mariadb):
    db = throwaway_mariadb
    db.set_global("wait_timeout", 7)
    assert db.get_global("wait_timeout") == "7"
    with pytest.raises(ValueError):
        db.set_global("wait_timeout; DROP DATABASE test", 1)

    before = db.connection_count()
    held = [db.connect() for _ in range(3)]
    try:
        assert db.connection_count() == before + 3
        assert db.connection_count(user="root") >= 3
        assert db.connection_count(user="nobody-here") == 0
    finally:
        for conn in held:
            conn.close()
    # The server notices the closes asynchronously: poll, bounded.
    deadline = time.monotonic() + 5
    while db.connection_count() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert db.connection_count() == before


def test_own_server_stop_and_cleanup():
    """A second, private instance: stop() ends the PID, close() removes the datadir."""
    db = ThrowawayMariaDB()
    with db:
        tmpdir = db.tmpdir
        pid = db.pid
        assert port_is_open("127.0.0.1", db.port)
        db.stop(timeout=30)
        assert not db.running
        assert not port_is_open("127.0.0.1", db.port, timeout=0.5)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not tmpdir.exists()


def test_start_failure_names_the_cause():
    db = ThrowawayMariaDB(extra_args=["--no-such-option-for-greenpool"])
    try:
        with pytest.raises(MariaDBError, match="exited with status"):
            db.start(timeout=30)
        assert not db.running
    finally:
        db.close()

"""The pool over real PyMySQL connections to MariaDB (no Django)."""

from __future__ import annotations

import signal
import time

import pytest

from greenpool import mysql as gpmysql
from greenpool.pool import Pool
from tests.support.proxy import TCPProxy

pytestmark = pytest.mark.mysql


@pytest.fixture
def pool(mysql_params):
    params = dict(
        host=mysql_params["host"],
        port=int(mysql_params["port"]),
        user=mysql_params["user"],
        password=mysql_params["password"],
        database=mysql_params["database"],
        autocommit=True,
    )
    pool = Pool(
        gpmysql.connect_factory(params),
        max_size=2,
        timeout=5,
        check=gpmysql.check,
        check_window=0,
        reset=gpmysql.make_reset(False),
        concurrency="threads",
        name="mysql-test",
    )
    yield pool
    pool.close()


def thread_id(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT CONNECTION_ID()")
        return cur.fetchone()[0]


def test_health_check_replaces_a_connection_killed_by_the_server(pool, mysql_admin):
    with pool.connection() as conn:
        victim = thread_id(conn)
    with mysql_admin.cursor() as cur:
        cur.execute(f"KILL CONNECTION {victim}")
    with pool.connection() as conn:
        assert thread_id(conn) != victim
    assert pool.get_stats()["connections_lost"] == 1


def test_checkin_rolls_back_an_open_transaction(pool):
    with pool.connection() as conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS gp_pool_tx (id INT PRIMARY KEY) ENGINE=InnoDB")
            cur.execute("DELETE FROM gp_pool_tx")
            cur.execute("BEGIN")
            cur.execute("INSERT INTO gp_pool_tx VALUES (1)")
        assert gpmysql.in_transaction(conn)
    with pool.connection() as again:
        assert again is conn and not gpmysql.in_transaction(again)
        with again.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM gp_pool_tx")
            assert cur.fetchone() == (0,)
            cur.execute("DROP TABLE gp_pool_tx")


def test_checkin_with_nothing_to_roll_back_costs_no_round_trip(pool):
    with pool.connection() as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    with pool.connection() as conn:
        with conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Questions'")
            before = int(cur.fetchone()[1])
    with pool.connection() as conn:  # one checkout + checkin, no statement
        pass
    with pool.connection() as conn:
        with conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Questions'")
            after = int(cur.fetchone()[1])
    # Exactly the SHOW statement itself: the checkins in between sent nothing.
    assert after - before == 1


def test_repr_of_a_pooled_connection_names_where_it_points_but_not_the_password():
    # defer_connect: the real class, without a server account that has this password.
    conn = gpmysql.PooledConnection(
        host="db.example", port=3307, user="app_user", password="S3cret-1f9a", defer_connect=True
    )
    assert repr(conn) == "<PooledConnection app_user@db.example:3307 id=None closed>"


def test_looks_dead_sees_a_kill_without_a_round_trip(pool, mysql_admin):
    import time

    with pool.connection() as conn:
        victim = thread_id(conn)
        assert not gpmysql.looks_dead(conn)
    with mysql_admin.cursor() as cur:
        cur.execute(f"KILL CONNECTION {victim}")
    deadline = time.monotonic() + 5
    while not gpmysql.looks_dead(conn) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gpmysql.looks_dead(conn)


def test_looks_dead_works_on_a_descriptor_above_1023(mysql_params, mysql_admin):
    # select() refuses descriptors from 1024 up; a gevent worker with a thousand
    # clients opens its pool's connections there. The probe must still see a KILL,
    # and not raise (the pool would take that for "suspect" and ping every checkout).
    import time

    from tests.support.fds import next_descriptors_from

    params = {k: mysql_params[k] for k in ("host", "user", "password", "database")}
    try:
        with next_descriptors_from(1100):
            conn = gpmysql.connect_factory({**params, "port": int(mysql_params["port"])})()
    except OSError as exc:
        pytest.skip(f"cannot open 1100 descriptors here: {exc}")
    try:
        assert conn._sock.fileno() >= 1100
        assert gpmysql.looks_dead(conn) is False
        with mysql_admin.cursor() as cur:
            cur.execute(f"KILL CONNECTION {thread_id(conn)}")
        deadline = time.monotonic() + 5
        while not gpmysql.looks_dead(conn) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gpmysql.looks_dead(conn) is True
    finally:
        conn.close()


def test_repr_of_an_open_connection_shows_the_user_as_text_and_its_thread_id(pool, mysql_params):
    with pool.connection() as conn:
        expected = (
            f"<PooledConnection {mysql_params['user']}@{mysql_params['host']}:{mysql_params['port']} "
            f"id={thread_id(conn)} open>"
        )
        assert repr(conn) == expected


class _Interrupted(BaseException):
    """Stands in for a gevent.Timeout or GreenletExit landing mid-read."""


def _interrupt_after(seconds):
    def handler(signum, frame):
        raise _Interrupted()

    signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def test_connection_interrupted_while_setting_autocommit_is_not_reused(mysql_params):
    # Django's atomic() sends SET AUTOCOMMIT outside query(), where greenpool
    # marks nothing busy. Its reply, left unread by an interruption, must not
    # become the answer to the next request's first statement: PyMySQL closes
    # a connection whose read was interrupted, and the checkin discards it.
    with TCPProxy(mysql_params["host"], int(mysql_params["port"])) as proxy:
        params = proxy.route(
            dict(
                host=mysql_params["host"],
                port=int(mysql_params["port"]),
                user=mysql_params["user"],
                password=mysql_params["password"],
                database=mysql_params["database"],
                autocommit=True,
            )
        )
        pool = Pool(
            gpmysql.connect_factory(params),
            max_size=1,
            timeout=5,
            reset=gpmysql.make_reset(False),
            concurrency="threads",
            name="interrupted",
        )
        previous = signal.getsignal(signal.SIGALRM)
        try:
            conn = pool.getconn()
            proxy.stall()
            _interrupt_after(0.2)
            with pytest.raises(_Interrupted):
                conn.autocommit(False)  # sent; its OK packet is held by the proxy
            proxy.resume()
            time.sleep(0.2)  # the reply now waits, unread, in the socket
            pool.putconn(conn)
            assert pool.get_stats()["returns_bad"] == 1
            with pool.connection() as fresh:
                assert fresh is not conn
                with fresh.cursor() as cur:
                    cur.execute("SELECT 42")
                    assert cur.fetchall() == ((42,),)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            pool.close()


def test_pooled_tcp_connections_probe_an_idle_peer_after_a_minute(pool):
    """TCP keepalive at the pool's intervals, not the kernel's two hours: NAT and
    load-balancer state stays alive, and a vanished server host is noticed."""
    import socket

    conn = pool.getconn()
    try:
        sock = conn._sock
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == gpmysql.TCP_KEEPALIVE_IDLE == 60
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL) == gpmysql.TCP_KEEPALIVE_INTERVAL
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT) == gpmysql.TCP_KEEPALIVE_COUNT
    finally:
        pool.putconn(conn)

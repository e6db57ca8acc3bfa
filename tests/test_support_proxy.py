"""TCPProxy against the shared MariaDB: relay, stall, resume, cut."""

import threading
import time

import pymysql
import pytest

# Imported from pymysql.err, not used as `pymysql.err.OperationalError`: once Django's MySQL
# backend has loaded (pymysql.install_as_MySQLdb), the attribute pymysql.err points to a
# second copy of the module (MySQLdb.err) whose classes PyMySQL never raises.
from pymysql.err import OperationalError

from tests.support.proxy import TCPProxy

pytestmark = pytest.mark.mysql


@pytest.fixture
def proxy(mysql_params):
    with TCPProxy(mysql_params["host"], mysql_params["port"]) as proxy:
        yield proxy


def _connect(params, **kw):
    kw.setdefault("connect_timeout", 5)
    kw.setdefault("read_timeout", 10)
    return pymysql.connect(**params, **kw)


def _select_1(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT 1")
        return cur.fetchone()[0]


def test_relays_queries(proxy, mysql_params):
    conn = _connect(proxy.route(mysql_params))
    try:
        assert _select_1(conn) == 1
        assert proxy.open_connections == 1
    finally:
        conn.close()


def test_stall_times_out_the_client(proxy, mysql_params):
    conn = _connect(proxy.route(mysql_params), read_timeout=1)
    try:
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(OperationalError):
            _select_1(conn)  # no answer arrives; the client's read timeout fires
        assert 0.9 <= time.monotonic() - started < 5
    finally:
        conn.close()


def test_stall_then_resume_answers_held_query(proxy, mysql_params):
    conn = _connect(proxy.route(mysql_params), read_timeout=10)
    result = {}
    proxy.stall()

    def query():
        result["value"] = _select_1(conn)

    thread = threading.Thread(target=query, daemon=True)
    thread.start()
    thread.join(0.5)
    assert thread.is_alive()  # held by the stall
    assert proxy.open_connections == 1  # stalled, not closed
    proxy.resume()
    thread.join(5)
    assert result == {"value": 1}
    conn.close()


def test_cut_closes_open_connections(proxy, mysql_params):
    conn = _connect(proxy.route(mysql_params))
    assert _select_1(conn) == 1
    assert proxy.cut() == 1
    with pytest.raises(OperationalError):
        _select_1(conn)
    conn.close()
    # The proxy still accepts new connections after a cut.
    again = _connect(proxy.route(mysql_params))
    assert _select_1(again) == 1
    again.close()


def test_stall_replies_lets_the_statement_run_and_holds_its_answer(proxy, mysql_params):
    conn = _connect(proxy.route(mysql_params), read_timeout=10, autocommit=True)
    admin = _connect(mysql_params, autocommit=True)
    result = {}
    try:
        thread_id = conn.thread_id()
        proxy.stall_replies()

        def query():
            with conn.cursor() as cur:
                cur.execute("SELECT GET_LOCK('greenpool-proxy-test', 0)")
                result["done"] = True

        thread = threading.Thread(target=query, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        ran = False
        while not ran and time.monotonic() < deadline:
            with admin.cursor() as cur:  # the statement reached the server and ran there
                cur.execute("SELECT IS_USED_LOCK('greenpool-proxy-test')")
                ran = cur.fetchone() == (thread_id,)
            time.sleep(0.05)
        thread.join(0.3)
        assert ran and thread.is_alive() and result == {}  # run, but its answer held
        proxy.resume()
        thread.join(5)
        assert result == {"done": True}
    finally:
        admin.close()
        conn.close()

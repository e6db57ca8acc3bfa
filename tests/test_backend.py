"""greenpool/backends/mysql against a real MariaDB/MySQL server.

In-process tests run the backend on threads (an unpatched process, as under
manage.py or a threaded server); tests/test_backend_gevent.py runs it in
monkey-patched subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytestmark = pytest.mark.mysql

DB_NAME = "greenpool_backend"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def django_db(mysql_params):
    """Configure Django for this process once, against a database of our own."""
    import django
    from django.conf import settings

    admin = _admin(mysql_params)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {DB_NAME} CHARACTER SET utf8mb4")
    admin.close()
    if not settings.configured:
        settings.configure(
            DATABASES={"default": db_settings(mysql_params)},
            INSTALLED_APPS=["tests.backend_app"],
            USE_TZ=True,
        )
        django.setup()
    from django.db import connection

    from tests.backend_app.models import Item

    with connection.schema_editor() as editor:
        editor.execute(f"DROP TABLE IF EXISTS {Item._meta.db_table}")
        editor.create_model(Item)
    connection.close()
    return mysql_params


def db_settings(mysql_params, **overrides):
    settings = {
        "ENGINE": "greenpool.backends.mysql",
        "NAME": DB_NAME,
        "USER": mysql_params["user"],
        "PASSWORD": mysql_params["password"],
        "HOST": mysql_params["host"],
        "PORT": str(mysql_params["port"]),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {"pool": {"max_size": 4, "timeout": 5}},
    }
    settings.update(overrides)
    return settings


def _admin(mysql_params):
    import pymysql

    return pymysql.connect(
        host=mysql_params["host"],
        port=int(mysql_params["port"]),
        user=mysql_params["user"],
        password=mysql_params["password"],
        autocommit=True,
        ssl_disabled=True,
    )


def server_connections(mysql_params):
    admin = _admin(mysql_params)
    with admin.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (DB_NAME,))
        (count,) = cur.fetchone()
    admin.close()
    return count


@pytest.fixture
def handler(django_db):
    """Build a ConnectionHandler per test configuration; close its pools after."""
    from django.db.utils import ConnectionHandler

    made = []

    def make(**overrides):
        databases = overrides.pop("databases", None) or {"default": db_settings(django_db, **overrides)}
        h = ConnectionHandler(databases)
        made.append(h)
        return h

    yield make
    for h in made:
        for conn in h.all(initialized_only=True):
            conn.close()
            if hasattr(conn, "close_pool"):
                conn.close_pool()


def query_one(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


# -- settings contract ---------------------------------------------------------


def test_pool_true_builds_a_pool_with_defaults(handler):
    conn = handler(OPTIONS={"pool": True})["default"]
    assert conn.pool is not None and conn.pool.max_size == 10
    assert query_one(conn, "SELECT 1") == (1,)


def test_without_pool_option_it_is_djangos_mysql_backend(handler, django_db):
    conn = handler(OPTIONS={})["default"]
    assert conn.pool is None
    first = query_one(conn, "SELECT CONNECTION_ID()")
    conn.close()
    assert conn.connection is None
    assert query_one(conn, "SELECT CONNECTION_ID()") != first, "closing without a pool disconnects"


@pytest.mark.parametrize(
    "pool, message",
    [
        ({"max_sise": 3}, r"unknown option\(s\) max_sise; valid options are: min_size, max_size"),
        ({"max_size": 0}, r"max_size=0"),
        ({"timeout": "soon"}, r"timeout='soon'"),
        ({"keepalive": -1}, r"keepalive.*-1"),
        ({"reset_session": "yes"}, r"reset_session.*'yes'"),
        ({"reply_wait": 0.05}, r"\['reply_wait'\]=0.05 is invalid: expected seconds from 0 to 0.01"),
        ({"reply_wait": -0.001}, r"\['reply_wait'\]=-0.001 is invalid"),
        ({"reply_wait": True}, r"\['reply_wait'\]=True is invalid"),
        ("big", r"must be True or a dict"),
    ],
)
def test_invalid_pool_options_fail_when_the_connection_is_built(handler, pool, message):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=message):
        handler(OPTIONS={"pool": pool})["default"]


def test_reply_wait_is_left_off_where_gevent_has_not_patched_the_socket(handler, django_db):
    # With threads a read blocks its own thread: waiting first would only add a poll.
    conn = handler(OPTIONS={"pool": {"reply_wait": 0.001}})["default"]
    assert query_one(conn, "SELECT 1") == (1,)
    assert conn.connection.greenpool.reply_wait == 0


def test_conn_max_age_with_a_pool_is_improperly_configured(handler):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="Pooling doesn't support persistent connections."):
        handler(CONN_MAX_AGE=60)["default"]


def test_conn_health_checks_turn_on_the_checkout_check(handler):
    assert handler(CONN_HEALTH_CHECKS=True)["default"].pool._check is not None
    assert handler(CONN_HEALTH_CHECKS=False, OPTIONS={"pool": {"max_size": 3}})["default"].pool._check is None


def test_mysqlclient_imported_first_is_refused_at_startup():
    script = textwrap.dedent(
        """
        import sys, types
        # Stand-in for the C driver's module object, imported before Django
        # loads the backend (what `import MySQLdb` does with mysqlclient).
        sys.modules["MySQLdb"] = types.ModuleType("MySQLdb")
        from django.core.exceptions import ImproperlyConfigured
        try:
            import greenpool.backends.mysql.base
        except ImproperlyConfigured as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "needs PyMySQL" in out.stdout and "blocks the gevent hub" in out.stdout, out.stderr


def test_close_returns_the_connection_to_the_pool(handler, django_db):
    conn = handler()["default"]
    first = query_one(conn, "SELECT CONNECTION_ID()")
    conn.close()
    assert conn.connection is None
    assert conn.pool.get_stats()["pool_available"] == 1
    assert query_one(conn, "SELECT CONNECTION_ID()") == first, "the pooled connection is reused"


def test_close_pool_closes_server_connections(handler, django_db):
    baseline = server_connections(django_db)
    conn = handler(OPTIONS={"pool": {"max_size": 4, "min_size": 2}})["default"]
    conn.pool.open(wait=True, timeout=5)
    assert server_connections(django_db) == baseline + 2
    conn.close_pool()
    assert server_connections(django_db) == baseline


def test_django_session_setup_holds_on_a_pooled_connection(handler):
    # charset explicit: Django 4.2 defaults to utf8 (utf8mb3), 5.x to utf8mb4.
    conn = handler(OPTIONS={"pool": {"max_size": 4}, "charset": "utf8mb4"})["default"]
    for _ in range(2):
        isolation, auto_is_null, charset, text = query_one(
            conn, "SELECT @@tx_isolation, @@sql_auto_is_null, @@character_set_connection, %s", ("a😀b",)
        )
        assert isolation == "READ-COMMITTED" and auto_is_null == 0 and charset == "utf8mb4"
        assert text == "a😀b"
        conn.close()


def test_session_setup_runs_once_per_physical_connection(handler, django_db):
    """Django's SET statements run per physical connection, not per checkout."""
    conn = handler()["default"]
    query_one(conn, "SELECT 1")
    conn.close()
    before = query_one(conn, "SHOW SESSION STATUS LIKE 'Com_set_option'")
    conn.close()
    after = query_one(conn, "SHOW SESSION STATUS LIKE 'Com_set_option'")
    conn.close()
    assert int(after[1]) == int(before[1])


# -- transactions ---------------------------------------------------------------


def test_atomic_savepoints_and_select_for_update(handler):
    conn = handler()["default"]
    with _atomic(conn):
        with conn.cursor() as cur:
            cur.execute("INSERT INTO backend_app_item (name, counter) VALUES ('a', 1)")
        sid = conn.savepoint()
        with conn.cursor() as cur:
            cur.execute("INSERT INTO backend_app_item (name, counter) VALUES ('b', 1)")
        conn.savepoint_rollback(sid)
        row = query_one(conn, "SELECT COUNT(*) FROM backend_app_item WHERE name IN ('a', 'b') FOR UPDATE")
        assert row == (1,)
    assert query_one(conn, "SELECT COUNT(*) FROM backend_app_item WHERE name = 'b'") == (0,)
    with conn.cursor() as cur:
        cur.execute("DELETE FROM backend_app_item")


class _atomic:
    """transaction.atomic bound to a handler's connection object."""

    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        self.conn.set_autocommit(False)

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.conn.commit()
        else:
            self.conn.rollback()
        self.conn.set_autocommit(True)


def test_orm_transaction_atomic_and_select_for_update(django_db):
    from django.db import connection, transaction

    from tests.backend_app.models import Item

    item = Item.objects.create(name="x", counter=0)
    with transaction.atomic():
        locked = Item.objects.select_for_update().get(pk=item.pk)
        locked.counter += 1
        locked.save()
        with pytest.raises(RuntimeError):
            with transaction.atomic():  # a savepoint
                Item.objects.filter(pk=item.pk).update(counter=100)
                raise RuntimeError("roll back to the savepoint")
    assert Item.objects.get(pk=item.pk).counter == 1
    Item.objects.all().delete()
    connection.close()


def test_connection_returned_inside_a_transaction_is_rolled_back(handler):
    conn = handler()["default"]
    conn.set_autocommit(False)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO backend_app_item (name, counter) VALUES ('uncommitted', 1)")
    raw = conn.connection
    conn.close()  # returned mid-transaction
    assert query_one(conn, "SELECT COUNT(*) FROM backend_app_item WHERE name = 'uncommitted'") == (0,)
    assert conn.connection is raw, "the connection was rolled back and reused, not discarded"
    assert conn.connection.get_autocommit()


def test_connection_in_error_state_is_discarded(handler):
    conn = handler()["default"]
    query_one(conn, "SELECT 1")
    raw = conn.connection
    raw.greenpool.busy = True  # as if a query was interrupted half-way
    conn.close()
    assert not raw.open
    assert conn.pool.get_stats()["returns_bad"] == 1


# -- session state ----------------------------------------------------------------


def _leak_state(conn):
    with conn.cursor() as cur:
        cur.execute("SET @secret = 'from request 1'")
        cur.execute("CREATE TEMPORARY TABLE leaked (x INT)")
        cur.execute("SET SESSION sql_mode = 'ANSI_QUOTES'")
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE")
        cur.execute("SELECT GET_LOCK('greenpool-test-lock', 0)")


def test_reset_session_leaves_no_state_for_the_next_request(handler, django_db):
    from django.db import ProgrammingError

    conn = handler(OPTIONS={"pool": {"max_size": 1, "reset_session": True}, "init_command": "SET @init = 'ran'"})[
        "default"
    ]
    _leak_state(conn)
    first = query_one(conn, "SELECT CONNECTION_ID()")
    conn.close()
    assert query_one(conn, "SELECT CONNECTION_ID()") == first, "same physical connection"
    assert query_one(conn, "SELECT @secret") == (None,)
    with pytest.raises(ProgrammingError, match="leaked"):
        query_one(conn, "SELECT * FROM leaked")  # the temporary table is gone
    assert "ANSI_QUOTES" not in query_one(conn, "SELECT @@sql_mode")[0]
    assert query_one(conn, "SELECT @@tx_isolation") == ("READ-COMMITTED",), "Django's set-up re-applied"
    assert query_one(conn, "SELECT IS_USED_LOCK('greenpool-test-lock')") == (None,)
    assert query_one(conn, "SELECT @init") == ("ran",), "init_command re-applied after the reset"
    assert query_one(conn, "SELECT %s", ("a😀b",)) == ("a😀b",)


@pytest.mark.parametrize(
    "statement",
    [
        "SET @secret = 'x'",
        "SELECT @secret := 'x'",
        "CREATE TEMPORARY TABLE leaked (x INT)",
        "SET SESSION sql_mode = 'ANSI_QUOTES'",
        "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SELECT GET_LOCK('greenpool-auto-lock', 0)",
        "PREPARE stmt FROM 'SELECT 1'",
        "SELECT 'x' INTO @secret",
    ],
)
def test_auto_reset_resets_a_session_that_changed(handler, statement):
    conn = handler(OPTIONS={"pool": {"max_size": 1, "reset_session": "auto"}})["default"]
    query_one(conn, "SELECT 1")
    conn.close()
    raw = conn.pool.getconn()
    conn.pool.putconn(raw)
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()
    assert raw.greenpool.resets == 1
    assert query_one(conn, "SELECT @secret, IS_USED_LOCK('greenpool-auto-lock'), @@tx_isolation") == (
        None,
        None,
        "READ-COMMITTED",
    )
    assert "ANSI_QUOTES" not in query_one(conn, "SELECT @@sql_mode")[0]


def test_auto_reset_costs_nothing_when_the_session_did_not_change(handler):
    conn = handler(OPTIONS={"pool": {"max_size": 1, "reset_session": "auto"}})["default"]
    raw = None
    for _ in range(5):
        query_one(conn, "SELECT 1")
        with conn.cursor() as cur:  # a transaction is rolled back or committed, no reset needed
            conn.set_autocommit(False)
            cur.execute("SELECT 1 FOR UPDATE")
            conn.commit()
            conn.set_autocommit(True)
        raw = conn.connection
        conn.close()
    assert raw.greenpool.resets == 0


def test_reset_session_false_keeps_session_variables(handler):
    """reset_session=False trades isolation for nothing at all: transactions are
    still rolled back, session variables are not cleared."""
    conn = handler(OPTIONS={"pool": {"max_size": 1, "reset_session": False}})["default"]
    query_one(conn, "SET @kept = 1")
    conn.close()
    assert query_one(conn, "SELECT @kept") == (1,)


# -- health ---------------------------------------------------------------------------


def test_connection_killed_by_server_is_replaced_before_the_request_sees_it(handler, django_db):
    conn = handler(OPTIONS={"pool": {"max_size": 2, "check_window": 0}})["default"]
    (victim,) = query_one(conn, "SELECT CONNECTION_ID()")
    conn.close()
    admin = _admin(django_db)
    with admin.cursor() as cur:
        cur.execute(f"KILL CONNECTION {victim}")
    admin.close()
    (fresh,) = query_one(conn, "SELECT CONNECTION_ID()")
    assert fresh != victim
    assert conn.pool.get_stats()["connections_lost"] == 1


def test_recently_used_connection_is_not_pinged_again(handler):
    conn = handler(OPTIONS={"pool": {"max_size": 2, "check_window": 30}})["default"]
    query_one(conn, "SELECT 1")
    conn.close()
    query_one(conn, "SELECT 1")
    conn.close()
    assert conn.pool.get_stats()["checks_skipped"] == 1


def test_keepalive_auto_is_half_the_sessions_wait_timeout(handler):
    # The session value counts, so an init_command that sets it does (docs/tuning.md).
    conn = handler(OPTIONS={"pool": {"max_size": 2}, "init_command": "SET SESSION wait_timeout = 7"})["default"]
    query_one(conn, "SELECT 1")
    assert conn.pool.keepalive == 3.5


# -- sessions gone before use, and Django's verdicts ---------------------------------------


@pytest.fixture
def proxied(handler, django_db):
    """One pooled connection through a TCPProxy (so a test can reset it the way a
    middlebox does), with Django's default CONN_HEALTH_CHECKS (False)."""
    from tests.support.proxy import TCPProxy

    with TCPProxy(django_db["host"], int(django_db["port"])) as proxy:
        conn = handler(
            HOST=proxy.host,
            PORT=str(proxy.port),
            CONN_HEALTH_CHECKS=False,
            OPTIONS={"pool": {"max_size": 1, "timeout": 5}},
        )["default"]
        query_one(conn, "SELECT 1")  # the pool's one connection, with Django's set-up done
        conn.close()
        yield conn, proxy


def _reset_by_the_network(proxy, raw):
    """The proxy resets the connection (RST); wait until the client's socket knows."""
    from greenpool import mysql as gpmysql

    proxy.cut(reset=True)
    deadline = time.monotonic() + 5
    while not gpmysql.looks_dead(raw):
        assert time.monotonic() < deadline, "the reset never reached the client's socket"
        time.sleep(0.01)


def _rows_named(django_db, name):
    admin = _admin(django_db)
    try:
        with admin.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {DB_NAME}.backend_app_item WHERE name = %s", (name,))
            return cur.fetchone()[0]
    finally:
        admin.close()


def _unique_name():
    import uuid

    return f"issue19-{uuid.uuid4().hex[:10]}"


def test_first_statement_that_could_not_be_sent_runs_once_on_a_new_session(proxied, django_db):
    conn, proxy = proxied
    name = _unique_name()
    (old_id,) = query_one(conn, "SELECT CONNECTION_ID()")
    conn.close()
    conn.ensure_connection()  # checked out alive; the network drops it before the first statement
    raw = conn.connection
    _reset_by_the_network(proxy, raw)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO backend_app_item (name, counter) VALUES (%s, 1)", (name,))
    new_id, isolation, auto_is_null = query_one(conn, "SELECT CONNECTION_ID(), @@tx_isolation, @@sql_auto_is_null")
    assert new_id != old_id and conn.connection is raw
    assert (isolation, auto_is_null) == ("READ-COMMITTED", 0), "Django's session set-up ran on the new session"
    assert _rows_named(django_db, name) == 1
    stats = conn.pool.get_stats()
    assert (stats["connections_lost"], stats["pool_size"]) == (1, 1)


def test_transaction_start_that_could_not_be_sent_is_sent_on_a_new_session(proxied, django_db):
    """ATOMIC_REQUESTS and atomic() begin with SET AUTOCOMMIT = 0: that first
    command is resent too, and the transaction then runs on the new session."""
    conn, proxy = proxied
    name = _unique_name()
    conn.ensure_connection()
    _reset_by_the_network(proxy, conn.connection)
    conn.set_autocommit(False)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO backend_app_item (name, counter) VALUES (%s, 1)", (name,))
        cur.execute("SELECT @@tx_isolation")
        assert cur.fetchone() == ("READ-COMMITTED",)
    assert _rows_named(django_db, name) == 0, "not committed yet: the transaction is open"
    conn.commit()
    conn.set_autocommit(True)
    assert _rows_named(django_db, name) == 1


def test_statement_whose_answer_was_lost_is_never_sent_again(proxied, django_db):
    """2013: the statement reached the server (here it ran) and its answer was
    lost. Resending it could run it twice, so the error reaches the caller."""
    from django.db import OperationalError

    conn, proxy = proxied
    name = _unique_name()
    conn.ensure_connection()
    proxy.stall_replies()
    cut = threading.Event()

    def cut_once_it_ran():
        deadline = time.monotonic() + 5
        while _rows_named(django_db, name) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        proxy.cut(reset=True)
        cut.set()

    cutter = threading.Thread(target=cut_once_it_ran, daemon=True)
    cutter.start()
    with pytest.raises(OperationalError) as error:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO backend_app_item (name, counter) VALUES (%s, 1)", (name,))
    cutter.join(10)
    assert cut.is_set()
    assert error.value.args[0] == 2013, error.value
    assert _rows_named(django_db, name) == 1, "run once, never twice"
    conn.close()
    assert conn.pool.get_stats()["returns_bad"] == 1


def test_statement_in_a_transaction_that_did_work_is_never_sent_again(proxied, django_db):
    from django.db import OperationalError

    conn, proxy = proxied
    name = _unique_name()
    conn.set_autocommit(False)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO backend_app_item (name, counter) VALUES (%s, 1)", (name,))
    _reset_by_the_network(proxy, conn.connection)
    with pytest.raises(OperationalError) as error:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO backend_app_item (name, counter) VALUES (%s, 2)", (name,))
    assert error.value.args[0] == 2006, error.value
    assert _rows_named(django_db, name) == 0, "the server rolled the transaction back; nothing ran on a new session"
    conn.close()
    assert conn.pool.get_stats()["returns_bad"] == 1


def test_is_usable_on_a_closed_connection_is_false(handler):
    conn = handler()["default"]
    query_one(conn, "SELECT 1")
    conn.close()
    assert conn.is_usable() is False


def test_connection_django_drops_for_autocommit_left_off_is_discarded_not_reused(handler):
    conn = handler()["default"]
    (first,) = query_one(conn, "SELECT CONNECTION_ID()")
    conn.set_autocommit(False)  # and the request ends without restoring it
    conn.close_if_unusable_or_obsolete()
    assert conn.connection is None
    (second,) = query_one(conn, "SELECT CONNECTION_ID()")
    assert second != first
    assert conn.pool.get_stats()["returns_bad"] == 1


def test_connection_django_found_unusable_after_an_error_is_discarded(handler, django_db):
    from django.db import OperationalError

    conn = handler(CONN_HEALTH_CHECKS=False)["default"]
    (first,) = query_one(conn, "SELECT CONNECTION_ID()")
    admin = _admin(django_db)
    with admin.cursor() as cur:
        cur.execute(f"KILL CONNECTION {first}")
    admin.close()
    with pytest.raises(OperationalError):
        query_one(conn, "SELECT 1")  # checked out before the KILL: the request sees it
    assert conn.errors_occurred
    conn.close_if_unusable_or_obsolete()  # is_usable() says no: Django closes it
    assert conn.connection is None
    assert conn.pool.get_stats()["returns_bad"] == 1
    assert query_one(conn, "SELECT CONNECTION_ID()") != (first,)


# -- aliases and threads ----------------------------------------------------------------


def test_each_alias_gets_its_own_pool(handler, django_db):
    primary = db_settings(django_db)
    replica = db_settings(django_db, OPTIONS={"pool": {"max_size": 2}})
    h = handler(databases={"default": primary, "replica": replica})
    assert h["default"].pool is not h["replica"].pool
    assert h["default"].pool.name == "default" and h["replica"].pool.name == "replica"
    query_one(h["default"], "SELECT 1")
    query_one(h["replica"], "SELECT 1")
    assert h["default"].pool.get_stats()["pool_size"] == 1
    assert h["replica"].pool.get_stats()["pool_size"] == 1


def test_threads_share_one_bounded_pool(handler, django_db):
    h = handler(OPTIONS={"pool": {"max_size": 3, "timeout": 30}})
    errors, peak = [], []

    def work():
        try:
            for _ in range(20):
                query_one(h["default"], "SELECT SLEEP(0.001)")
                h["default"].close()
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    def watch(stop):
        while not stop.is_set():
            peak.append(server_connections(django_db))
            stop.wait(0.02)

    baseline = server_connections(django_db)
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    watcher.start()
    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    watcher.join(5)
    assert not errors
    assert max(peak) - baseline <= 3
    assert h["default"].pool.get_stats()["pool_size"] <= 3


def test_ssl_context_is_built_once_per_pool_settings(handler):
    conn = handler(OPTIONS={"pool": {"max_size": 3}})["default"]
    raws = [conn.pool.getconn() for _ in range(3)]
    try:
        contexts = {id(getattr(r, "ctx", None)) for r in raws}
        assert len(contexts) == 1
    finally:
        for r in raws:
            conn.pool.putconn(r)


def test_pool_timeout_becomes_a_django_operational_error_naming_the_pool(handler):
    from django.db import OperationalError

    from greenpool.errors import PoolTimeout

    h = handler(OPTIONS={"pool": {"max_size": 1, "timeout": 0.2}})
    held = h["default"].pool.getconn()
    try:
        with pytest.raises(OperationalError) as info:
            query_one(h["default"], "SELECT 1")
        assert isinstance(info.value.__cause__, PoolTimeout)
        assert "'default'" in str(info.value) and "max_size=1" in str(info.value)
    finally:
        h["default"].pool.putconn(held)


def test_loading_the_backend_keeps_one_copy_of_pymysql_modules(django_db):
    """Django imports MySQLdb.converters; without aliasing, that loads a second
    pymysql.err whose OperationalError PyMySQL never raises."""
    import pymysql
    from pymysql.err import OperationalError

    assert sys.modules["MySQLdb.err"] is sys.modules["pymysql.err"]
    assert pymysql.err.OperationalError is OperationalError
    with pytest.raises(pymysql.MySQLError):
        pymysql.connect(host=django_db["host"], port=int(django_db["port"]), user="no_such_user_gp", password="x")


def test_primary_and_replica_behind_a_router_each_use_their_own_pool(django_db):
    """ORM reads routed to the replica's pool, writes to the primary's (a fresh
    process, since DATABASES and DATABASE_ROUTERS are read once per process)."""
    script = textwrap.dedent(
        f"""
        import json, sys
        sys.path.insert(0, {ROOT!r})
        import django
        from django.conf import settings
        from tests.test_backend import db_settings
        P = {dict(django_db)!r}
        settings.configure(
            DATABASES={{"default": db_settings(P), "replica": db_settings(P, OPTIONS={{"pool": {{"max_size": 2}}}})}},
            DATABASE_ROUTERS=["tests.backend_app.routers.PrimaryReplicaRouter"],
            INSTALLED_APPS=["tests.backend_app"],
        )
        django.setup()
        from django.db import connections
        from tests.backend_app.models import Item
        item = Item.objects.create(name="routed")
        found = Item.objects.filter(pk=item.pk).exists()
        Item.objects.filter(pk=item.pk).delete()
        print(json.dumps({{
            "found": found,
            "same_pool": connections["default"].pool is connections["replica"].pool,
            "default": connections["default"].pool.get_stats()["requests_num"],
            "replica": connections["replica"].pool.get_stats()["requests_num"],
            "replica_name": connections["replica"].pool.name,
        }}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["found"] and not out["same_pool"]
    assert out["replica"] >= 1, "the read went through the replica's pool"
    assert out["default"] >= 1, "the writes went through the primary's pool"
    assert out["replica_name"] == "replica"


def test_thread_that_ends_without_closing_gives_its_connection_back(handler):
    import gc

    h = handler(OPTIONS={"pool": {"max_size": 2}})
    pool = h["default"].pool

    def job():
        query_one(h["default"], "SELECT 1")  # and no close(), as a careless thread does

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    gc.collect()  # the thread's DatabaseWrapper is freed: its lease is returned
    assert pool.get_stats()["pool_in_use"] == 0
    assert query_one(h["default"], "SELECT 1") == (1,)


def test_connection_goes_back_to_the_pool_it_came_from_after_the_pool_changed(handler):
    """The test runner renames NAME mid-checkout; the old pool is closed and the
    connection checked out from it is closed on return, not lost."""
    conn = handler(OPTIONS={"pool": {"max_size": 2}})["default"]
    query_one(conn, "SELECT 1")
    raw, old_pool = conn.connection, conn.pool
    conn.settings_dict["USER"] = conn.settings_dict["USER"]  # same target...
    conn.settings_dict["NAME"] = "information_schema"  # ...then a new one: a new pool
    assert conn.pool is not old_pool and old_pool.closed
    conn.close()
    assert not raw.open, "returned to its closed pool, which closed it"
    assert query_one(conn, "SELECT DATABASE()") == ("information_schema",)


def test_threads_racing_to_build_the_pool_share_one(handler):
    h = handler(OPTIONS={"pool": {"max_size": 3, "timeout": 10}})
    pools, errors = [], []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:

        def work():
            try:
                pools.append(h["default"].pool)
                query_one(h["default"], "SELECT 1")
                h["default"].close()
            except Exception as exc:  # asserted below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        sys.setswitchinterval(old)
    assert not errors
    assert len({id(p) for p in pools}) == 1 and not pools[0].closed


def test_forked_child_closing_an_inherited_connection_leaves_the_parents_session_alone(handler):
    conn = handler(OPTIONS={"pool": {"max_size": 1}})["default"]
    (before,) = query_one(conn, "SELECT CONNECTION_ID()")
    pid = os.fork()
    if pid == 0:  # the child inherits the checked-out connection and closes it
        try:
            conn.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert query_one(conn, "SELECT CONNECTION_ID()") == (before,), "the parent's session survived"


def test_connection_is_closed_when_learning_keepalive_fails(handler, django_db, monkeypatch):
    # keepalive "auto" reads @@wait_timeout on the pool's first connection; if
    # that fails, the new connection (not the pool's yet) must not stay open.
    from greenpool.backends.mysql import base

    opened = []

    def failing_learn(pool, conn):
        with conn.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            opened.append(cur.fetchone()[0])
            cur.execute("SELECT no_such_column")  # an error reply: the session stays usable

    monkeypatch.setattr(base, "_learn_keepalive", failing_learn)
    conn = handler(OPTIONS={"pool": {"max_size": 2, "timeout": 2}})["default"]
    with pytest.raises(Exception, match="no_such_column"):
        query_one(conn, "SELECT 1")
    admin = _admin(django_db)
    try:
        deadline = time.monotonic() + 5  # the server ends a session a moment after COM_QUIT
        while True:
            with admin.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %s", (opened[0],))
                left = cur.fetchone()[0]
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert left == 0, "the connection that failed to learn keepalive was closed"
    finally:
        admin.close()


def test_the_engine_runs_where_gevent_and_tornado_are_not_installed(django_db):
    """`pip install greenpool` has neither (they are greenpool-serve's extras): a fresh
    process where importing them fails runs the ENGINE's pool on threads."""
    script = textwrap.dedent(
        f"""
        import json, sys, threading
        sys.path.insert(0, {ROOT!r})

        class NotInstalled:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("gevent", "tornado"):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

        sys.meta_path.insert(0, NotInstalled())
        import django
        from django.conf import settings
        from tests.test_backend import db_settings
        settings.configure(DATABASES={{"default": db_settings({dict(django_db)!r}, OPTIONS={{"pool": {{"max_size": 2}}}})}})
        django.setup()
        from django.db import connection, connections

        def work():
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            connection.close()

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        stats = connections["default"].pool.get_stats()
        print(json.dumps({{"mode": connections["default"].pool.mode, "requests": stats["requests_num"],
                           "size": stats["pool_size"], "in_use": stats["pool_in_use"]}}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"mode": "threads", "requests": 6, "size": out["size"], "in_use": 0} and out["size"] <= 2

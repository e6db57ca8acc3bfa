"""greenpool.backends.mysql in gevent monkey-patched processes, against real MariaDB.

Each test runs a script in a fresh subprocess that patches first, as a gevent
worker does, then drives Django's request cycle and the ORM from greenlets and
prints a JSON verdict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.mysql

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PRELUDE = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, sys
    sys.path.insert(0, {root!r})
    import django, gevent, pymysql
    from django.conf import settings
    PARAMS = {params!r}
    import os
    # A database of this process's own, so counting its connections on the
    # server counts no other test's.
    DB = "gp_gevent_%d" % os.getpid()
    admin = pymysql.connect(host=PARAMS["host"], port=int(PARAMS["port"]), user=PARAMS["user"],
                            password=PARAMS["password"], autocommit=True, ssl_disabled=True)
    with admin.cursor() as cur:
        cur.execute("CREATE DATABASE IF NOT EXISTS " + DB)

    def server_connections():
        with admin.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (DB,))
            return cur.fetchone()[0]

    settings.configure(
        DATABASES={{"default": {{
            "ENGINE": "greenpool.backends.mysql", "NAME": DB, "USER": PARAMS["user"],
            "PASSWORD": PARAMS["password"], "HOST": PARAMS["host"], "PORT": str(PARAMS["port"]),
            "CONN_HEALTH_CHECKS": True, "OPTIONS": {{"pool": {pool!r}}},
        }}}},
        INSTALLED_APPS=[],
    )
    django.setup()
    from django.db import connection, connections, close_old_connections
    from django.core.signals import request_started, request_finished
    """
)


EPILOGUE = textwrap.dedent(
    """
    from greenpool import registry
    registry.close_all()
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS " + DB)
    """
)


def run_script(mysql_params, body, pool=None, timeout=120):
    pool = pool or {"max_size": 5, "timeout": 10}
    script = PRELUDE.format(root=ROOT, params=dict(mysql_params), pool=pool) + textwrap.dedent(body) + EPILOGUE
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(verdicts[-1])


def test_pool_runs_in_gevent_mode_in_a_patched_process(mysql_params):
    out = run_script(
        mysql_params,
        """
        with connection.cursor() as c:
            c.execute("SELECT 1")
        print(json.dumps({"mode": connection.pool.mode}))
        """,
    )
    assert out["mode"] == "gevent"


def test_request_cycle_returns_connections_and_stays_bounded(mysql_params):
    """500 concurrent 'requests' (greenlets running Django's request signals)
    share max_size=5 connections; none leaks, none errors."""
    out = run_script(
        mysql_params,
        """
        peak = [0]
        errors = []

        def request(i):
            request_started.send(sender=None)
            try:
                with connection.cursor() as c:
                    c.execute("SELECT SLEEP(0.002), %s", (i,))
                    assert c.fetchone()[1] == i
            except Exception as exc:
                errors.append(repr(exc))
            finally:
                request_finished.send(sender=None)

        stop = [False]

        def watch():
            # Stopped by a flag, not killed: a kill landing mid-query would leave the
            # admin connection half-read (the epilogue then failed with InterfaceError).
            while not stop[0]:
                peak[0] = max(peak[0], server_connections())
                gevent.sleep(0.01)

        watcher = gevent.spawn(watch)
        gevent.joinall([gevent.spawn(request, i) for i in range(500)], timeout=60)
        stop[0] = True
        watcher.join(timeout=10)
        stats = connection.pool.get_stats()
        print(json.dumps({"peak": peak[0], "errors": errors[:3], "stats": stats}))
        """,
    )
    assert out["errors"] == []
    assert out["peak"] <= 5
    stats = out["stats"]
    assert stats["requests_num"] == 500
    assert stats["pool_in_use"] == 0, "every request gave its connection back"


def test_spawned_greenlet_that_never_closes_gives_its_connection_back(mysql_params):
    out = run_script(
        mysql_params,
        """
        def background_job():
            with connection.cursor() as c:
                c.execute("SELECT 1")
            # ends without connection.close(): a leak without greenpool's link

        gevent.joinall([gevent.spawn(background_job) for _ in range(20)], timeout=30)
        gevent.sleep(0.2)  # the return runs in a greenlet of its own
        stats = connection.pool.get_stats()
        print(json.dumps({"stats": stats, "server": server_connections()}))
        """,
        pool={"max_size": 5, "timeout": 2},
    )
    assert out["stats"]["pool_in_use"] == 0
    assert out["stats"]["requests_num"] == 20
    assert out["server"] <= 5


def test_greenlet_killed_mid_query_discards_its_connection(mysql_params):
    out = run_script(
        mysql_params,
        """
        # Connect first, so that the timeout below interrupts the query and
        # not a connect slowed down by a busy machine.
        with connection.cursor() as c:
            c.execute("SELECT 1")
        connection.close()

        def slow():
            request_started.send(sender=None)
            try:
                with gevent.Timeout(0.1):
                    with connection.cursor() as c:
                        c.execute("SELECT SLEEP(2)")
            except gevent.Timeout:
                pass  # the request was cut short, as a server timeout would
            finally:
                request_finished.send(sender=None)

        gevent.spawn(slow).join(10)
        results = []

        def fast(i):
            request_started.send(sender=None)
            try:
                with connection.cursor() as c:
                    c.execute("SELECT %s", (i,))
                    results.append(c.fetchone()[0] == i)
            except Exception as exc:
                results.append(repr(exc))
            finally:
                request_finished.send(sender=None)

        gevent.joinall([gevent.spawn(fast, i) for i in range(20)], timeout=30)
        print(json.dumps({"results": results, "stats": connection.pool.get_stats()}))
        """,
        pool={"max_size": 1, "timeout": 5},
    )
    assert out["results"] == [True] * 20, "no later request saw a partial result or a protocol error"
    assert out["stats"]["returns_bad"] == 1


def test_atomic_requests_roll_back_on_error(mysql_params):
    out = run_script(
        mysql_params,
        """
        from django.db import transaction
        with connection.cursor() as c:
            c.execute("CREATE TABLE IF NOT EXISTS t_atomic (id INT PRIMARY KEY) ENGINE=InnoDB")
            c.execute("DELETE FROM t_atomic")
        connection.close()

        def failing_request():
            request_started.send(sender=None)
            try:
                with transaction.atomic():
                    with connection.cursor() as c:
                        c.execute("INSERT INTO t_atomic VALUES (1)")
                    raise RuntimeError("view failed")
            except RuntimeError:
                pass
            finally:
                request_finished.send(sender=None)

        gevent.spawn(failing_request).join(10)
        with connection.cursor() as c:
            c.execute("SELECT COUNT(*) FROM t_atomic")
            count = c.fetchone()[0]
            c.execute("DROP TABLE t_atomic")
        print(json.dumps({"count": count}))
        """,
    )
    assert out["count"] == 0


# -- reply_wait -------------------------------------------------------------------------

REPLY_WAIT_SCRIPT = """
ticks = [0]
stop = [False]

def ticker():
    # Runs whenever the greenlet that sends the statements yields to the hub.
    while not stop[0]:
        ticks[0] += 1
        gevent.sleep(0)

def ticks_during(sql, times):
    before = ticks[0]
    with connection.cursor() as c:
        for _ in range(times):
            c.execute(sql)
            c.fetchall()
    return ticks[0] - before

with connection.cursor() as c:
    c.execute("SELECT 1")  # connected, session set up
t = gevent.spawn(ticker)
gevent.sleep(0)
raw = connection.connection
verdict = {"reply_wait": raw.greenpool.reply_wait}
"""


def test_reply_wait_reads_a_quick_reply_without_yielding_to_the_hub(mysql_params):
    # The request holding a pool connection is not parked behind the other ready
    # greenlets while its reply is on its way. 10 ms: a loaded machine's server
    # still answers SELECT SLEEP(0.002) within that.
    # SLEEP(0.002): a reply that is never there yet when the client reads it (a bare
    # SELECT 1 sometimes is, when the server's thread answers on the other core
    # first), and that comes well within a 10 ms reply_wait.
    fast = """
verdict["fast"] = ticks_during("SELECT SLEEP(0.002)", 50)
stop[0] = True
print(json.dumps(verdict))
"""
    on = run_script(mysql_params, REPLY_WAIT_SCRIPT + fast, pool={"max_size": 1, "reply_wait": 0.01})
    off = run_script(mysql_params, REPLY_WAIT_SCRIPT + fast, pool={"max_size": 1, "reply_wait": 0})
    assert on["reply_wait"] == 0.01 and off["reply_wait"] == 0
    assert on["fast"] <= 5, on  # 50 statements: the others never ran, but for a rare late reply
    assert off["fast"] >= 50, off  # without it, every statement's read parks the greenlet


def test_reply_wait_pauses_on_a_connection_whose_replies_come_late_and_resumes(mysql_params):
    # SLEEP(0.02) replies after the 5 ms wait: the others run meanwhile, and after
    # 3 late replies in a row the connection waits for one statement in 16 only.
    # 5 ms, not less: the 16th statement's SELECT 1 must answer within the wait on
    # a loaded CI machine too.
    out = run_script(
        mysql_params,
        REPLY_WAIT_SCRIPT
        + """
verdict["slow"] = ticks_during("SELECT SLEEP(0.02)", 3)
verdict["misses"] = raw.greenpool.reply_misses
with connection.cursor() as c:
    for _ in range(15):
        c.execute("SELECT 1")
verdict["skipped"] = raw.greenpool.reply_skipped
verdict["misses_while_paused"] = raw.greenpool.reply_misses
with connection.cursor() as c:
    c.execute("SELECT 1")  # the 16th: waits again, and its quick reply ends the pause
verdict["misses_after"] = raw.greenpool.reply_misses
stop[0] = True
print(json.dumps(verdict))
""",
        pool={"max_size": 1, "reply_wait": 0.005},
    )
    assert out["slow"] >= 3, out  # each SLEEP yielded after its 5 ms
    assert out["misses"] == 3 and out["skipped"] == 15 and out["misses_while_paused"] == 3, out
    assert out["misses_after"] == 0, out

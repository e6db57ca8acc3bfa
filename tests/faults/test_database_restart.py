"""The database goes away and comes back while greenpool-serve serves.

* restarted under load, down for less than the pool timeout: only the queries in
  flight when it went down fail (at most workers x max_size, each a 503); requests
  that arrive while it is down wait and succeed; within a second of it being back
  every request succeeds; no worker restarts; the pools refill.
* down when the workers start: they start anyway, /hello works, database pages
  answer 503 after the pool timeout, and everything recovers when it comes up.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pymysql
import pytest

from tests.faults.conftest import SERVERS, demo_env
from tests.support.serve import TimedLoad

pytestmark = pytest.mark.faults

CHECK_WINDOW = 1.0  # the pool's default check_window: a connection used this recently is not pinged


def _describe(samples, origin):
    return "\n".join(s.describe(origin) for s in samples)


@pytest.mark.parametrize("kind", SERVERS)
def test_restart_under_load_fails_only_in_flight_queries_and_heals(serve, db, kind):
    workers, max_size, pool_timeout, outage = 2, 3, 5.0, 2.5
    server = serve(server=kind, workers=workers, env=demo_env(pool_max_size=max_size, pool_timeout=pool_timeout))
    before = server.wait_workers(workers)
    connects_before = sum(p["connections_num"] for p in server.pool_stats().values())
    clients = 12
    load = TimedLoad(server.port, ["/read", "/tx"], clients=clients, duration=30, timeout=20).start()
    try:
        time.sleep(1.5)
        t_down = time.monotonic()
        db.server.stop()  # graceful: SIGTERM, wait for the process to exit
        t_stopped = time.monotonic()
        time.sleep(outage)
        db.server.start()  # returns once it accepts a login
        t_up = time.monotonic()
        time.sleep(2.5)
    finally:
        samples = load.stop()
    assert t_up - t_down < pool_timeout - 1.0, "the outage must be shorter than the pool timeout for this test"
    failed = [s for s in samples if not s.ok]
    report = f"down at 0, stopped at {t_stopped - t_down:+.3f}s, back at {t_up - t_down:+.3f}s\n" + _describe(
        failed, t_down
    )
    print(f"{kind}: {len(samples)} requests, {len(failed)} failed\n{report}")

    # Only queries in flight when it went down fail: each pooled connection can fail
    # one request (it is discarded after), so at most workers x max_size.
    assert len(failed) <= workers * max_size, report
    # Every failure is a clear 503, never a 500 or a cut connection.
    assert all(s.status == 503 and b"database is busy or unreachable" in s.body for s in failed), report
    # A request that started after the server was gone can only have failed on a
    # connection it was handed unpinged (used within check_window before the stop);
    # once that window has passed, none fails.
    assert not [s for s in failed if s.started > t_stopped + CHECK_WINDOW], report
    # Requests that arrived while it was down waited for it and succeeded: each client
    # sends its next request at once, so every client has one that spans the outage,
    # unless its in-flight request failed late (Django's clean-up of a failed
    # transaction reconnects, waiting out the outage, before the 503 goes out).
    waited = [s for s in samples if s.ok and s.started < t_up - 1.5 and s.ended > t_up - 1.0]
    failed_late = [s for s in failed if s.ended > t_up - 1.0]
    assert {s.client for s in waited} | {s.client for s in failed_late} == set(range(clients)), (
        report + "\nwaited:\n" + _describe(waited, t_down)
    )
    # ... and were answered soon after it came back (reconnect back-off is at most 1.5 s).
    print(
        f"{kind}: the waiting requests were answered by {max(s.ended for s in waited) - t_up:+.2f}s after it was back"
    )
    assert max(s.ended for s in waited) < t_up + 2.5, _describe(waited, t_down)
    # From a second after it is back, every request succeeds.
    after = [s for s in samples if s.started > t_up + 1.0]
    assert len(after) > 50 and all(s.ok for s in after), report

    # No worker restarted, and the pools refilled.
    assert server.worker_pids() == before, server.log()[-4000:]
    assert "died unexpectedly" not in server.log()
    pools = server.pool_stats()
    assert all(
        1 <= p["pool_size"] <= max_size and p["pool_in_use"] == 0 and p["requests_waiting"] == 0 for p in pools.values()
    ), pools
    assert sum(p["connections_num"] for p in pools.values()) > connects_before, pools
    assert workers <= db.connection_count() <= workers * max_size
    assert all(server.get("/read")[0] == 200 for _ in range(10))


def _prepare_demo_database(db) -> None:
    """Migrate and seed this test's database (greenpool-serve skips it when the
    database is down at start)."""
    env = {
        "GREENPOOL_MYSQL_HOST": db.server.host,
        "GREENPOOL_MYSQL_PORT": str(db.server.port),
        "GREENPOOL_MYSQL_USER": db.server.user,
        "GREENPOOL_MYSQL_PASSWORD": db.server.password,
        "GREENPOOL_MYSQL_DATABASE": db.database,
        "PATH": "/usr/bin:/bin",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "greenpool.demo.prepare"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("kind", SERVERS)
def test_database_down_at_start_then_up(serve, db, kind):
    pool_timeout = 3.0
    _prepare_demo_database(db)
    db.server.stop()
    server = serve("--db-boot-timeout", "1", server=kind, workers=2, env=demo_env(pool_timeout=pool_timeout))
    log = server.log()
    assert "does not answer" in log and "starting anyway" in log, log
    assert len(re.findall(r"database 'default' \(.*\) unavailable at boot: .*serving anyway", log)) == 2, log
    pids = server.worker_pids()

    elapsed, status, _, body = server.timed_get("/hello")
    assert (status, body) == (200, b"hello\n") and elapsed < 1.0
    elapsed, status, headers, body = server.timed_get("/read")
    # The request waits out the pool timeout (retrying the connect), then 503.
    assert status == 503 and headers["retry-after"] == "1", body
    assert b"database is busy or unreachable (OperationalError)" in body
    print(f"{kind}: /read answered 503 after {elapsed:.2f}s with the database down (pool timeout {pool_timeout}s)")
    assert pool_timeout - 0.3 <= elapsed < pool_timeout + 3.0, elapsed
    assert "Can't connect to MySQL server on '127.0.0.1'" in server.log()

    db.server.start()
    t_up = time.monotonic()
    statuses = []
    deadline = t_up + 10
    while time.monotonic() < deadline:
        statuses.append(server.get("/read")[0])
        if statuses[-4:] == [200] * 4:
            break
    recovered = time.monotonic() - t_up
    print(f"{kind}: every page served again {recovered:.2f}s after the database was back")
    assert statuses[-4:] == [200] * 4, statuses
    assert recovered < 2.0, (recovered, statuses)
    assert all(server.get(path)[0] == 200 for path in ("/read", "/tx", "/healthz") for _ in range(4))
    assert server.worker_pids() == pids  # the same workers: nothing was restarted


@pytest.mark.parametrize("kind", SERVERS)
def test_too_many_connections_waits_then_503_and_heals(serve, db, kind):
    """The server is out of connections (max_connections): a request whose connect gets
    "Too many connections" (1040) retries it up to the pool timeout, then answers 503,
    while requests that queue for the connections the pools already hold are served;
    nothing is a 500; once the server has room, every request succeeds."""
    workers, max_size, pool_timeout = 2, 3, 2.0
    password = "Too-Many-0001"
    user = db.create_user(password)  # not root: MariaDB keeps one extra connection for SUPER users
    server = serve(
        server=kind,
        workers=workers,
        db_params=db.params(user=user, password=password),
        env=demo_env(pool_max_size=max_size, pool_min_size=1, pool_timeout=pool_timeout),
    )
    assert db.connection_count() == workers  # min_size=1 each
    db.set_global("max_connections", 10)  # MariaDB's smallest
    fillers = []
    try:
        for _ in range(20):  # take every connection left (bounded)
            try:
                fillers.append(db.server.connect(user=user, password=password, database=None))
            except pymysql.err.OperationalError as exc:
                assert exc.args[0] == 1040, exc
                break
        # /slow holds its connection for 0.1 s, so the pools need more than the
        # one each they have; /read alone runs through (reply_wait) on one.
        with TimedLoad(
            server.port, ["/read", "/slow?s=0.1"], clients=12, duration=pool_timeout + 1.5, timeout=20
        ) as load:
            pass
        samples = load.stop()
    finally:
        for conn in fillers:
            conn.close()
    statuses = {s.status for s in samples}
    print(
        f"{kind}: out of connections: {sum(s.ok for s in samples)} x 200, {sum(not s.ok for s in samples)} x 503, "
        f"slowest {max(s.ended - s.started for s in samples):.2f}s"
    )
    assert statuses == {200, 503}, statuses
    assert all(s.ended - s.started < pool_timeout + 2.0 for s in samples)
    log = server.log()
    assert "503 for GET /read: OperationalError: (1040, 'Too many connections')" in log, log[-3000:]

    with TimedLoad(server.port, ["/read", "/slow?s=0.1"], clients=12, duration=1.0, timeout=20) as load:
        pass
    after = load.stop()
    assert after and all(s.ok for s in after), [s.describe(0) for s in after if not s.ok][:5]
    assert workers < db.connection_count() <= workers * max_size  # the pools could grow again

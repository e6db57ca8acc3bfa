"""The server drops pooled connections behind the pool's back: KILL CONNECTION, and
wait_timeout passing while they sit idle.

With CONN_HEALTH_CHECKS (the demo has it on) a connection idle longer than
check_window is pinged at checkout and replaced if dead, so no request sees "MySQL
server has gone away" / "Lost connection". Without health checks (and keepalive)
the first request on each dropped connection fails with a 503, measured here and
described in docs/troubleshooting.md.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.faults.conftest import DOC_SERVERS, SERVERS, demo_env
from tests.support.serve import TimedLoad

pytestmark = pytest.mark.faults

WORKERS, MAX_SIZE = 2, 3
CHECK_WINDOW = 1.0


def _fill_pools(server, db) -> int:
    """Load until every worker's pool holds max_size connections; return how many the server sees."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with TimedLoad(server.port, ["/slow?s=0.05"], clients=4 * WORKERS * MAX_SIZE, duration=0.6) as load:
            pass
        assert all(s.ok for s in load.stop()), [s.describe(0) for s in load.samples if not s.ok][:5]
        if all(p["pool_size"] == MAX_SIZE for p in server.pool_stats().values()):
            break
    count = db.connection_count()
    assert count == WORKERS * MAX_SIZE, (count, server.pool_stats())
    return count


def _burst(server, clients: int, requests: int, path: str = "/read"):
    """``requests`` requests over ``clients`` concurrent connections; (status, body) each."""
    def one(_):
        status, _, body = server.get(path)
        return status, body

    with ThreadPoolExecutor(clients) as pool:
        return list(pool.map(one, range(requests)))


def _failures(results):
    return [(status, body[:200]) for status, body in results if status != 200]


@pytest.mark.parametrize("kind", SERVERS)
def test_kill_every_pooled_connection_then_every_request_succeeds(serve, db, kind):
    server = serve(server=kind, workers=WORKERS, env=demo_env(pool_max_size=MAX_SIZE, pool_timeout=5))
    _fill_pools(server, db)
    time.sleep(CHECK_WINDOW + 0.5)  # idle past check_window: the checkout pings them
    killed = db.kill_all()
    assert len(killed) == WORKERS * MAX_SIZE
    results = _burst(server, clients=2 * WORKERS * MAX_SIZE, requests=60)
    assert _failures(results) == []
    pools = server.pool_stats()
    assert sum(p["connections_lost"] for p in pools.values()) >= 1, pools
    assert "503 for" not in server.log()  # the health check's own "gone away" is logged at INFO
    assert db.connection_count() <= WORKERS * MAX_SIZE
    assert not set(killed) & set(db.connection_ids())


@pytest.mark.parametrize("kind", ["gevent", "tornado"])
def test_kill_every_pooled_connection_right_after_use_then_every_request_succeeds(serve, db, kind):
    server = serve(server=kind, workers=WORKERS, env=demo_env(pool_max_size=MAX_SIZE, pool_timeout=5))
    _fill_pools(server, db)
    db.kill_all()  # within check_window of their last use
    results = _burst(server, clients=2 * WORKERS * MAX_SIZE, requests=60)
    assert _failures(results) == []


@pytest.mark.parametrize("kind", DOC_SERVERS)
def test_kill_without_health_checks_fails_one_request_per_dropped_connection(serve, db, kind):
    """Documented behaviour (docs/troubleshooting.md): without CONN_HEALTH_CHECKS each
    killed idle connection fails the one request that takes it next, with a 503
    (2013 Lost connection), and is then replaced."""
    server = serve(server=kind, workers=WORKERS,
                   env=demo_env(pool_max_size=MAX_SIZE, pool_timeout=5, health_checks=0))
    killed = _fill_pools(server, db)
    time.sleep(CHECK_WINDOW + 0.5)
    db.kill_all()
    results = _burst(server, clients=2 * WORKERS * MAX_SIZE, requests=60)
    failures = _failures(results)
    print(f"{kind}: {len(failures)} of {len(results)} failed after KILL of {killed} idle connections")
    assert 1 <= len(failures) <= killed, failures
    assert all(status == 503 and b"database is busy or unreachable" in body for status, body in failures), failures
    assert "(2013, 'Lost connection to MySQL server during query')" in server.log()
    # ... and only once per connection: the next burst is clean.
    assert _failures(_burst(server, clients=2 * WORKERS * MAX_SIZE, requests=60)) == []


# -- wait_timeout ------------------------------------------------------------------------


@pytest.mark.parametrize("kind, mode", [(kind, mode) for mode in ("defaults", "health_checks_only") for kind in SERVERS]
                         + [(kind, "keepalive_only") for kind in DOC_SERVERS])
def test_wait_timeout_2s_then_3s_idle_then_every_request_succeeds(serve, db, kind, mode):
    """wait_timeout=2 on the server, then 3 s without a request. With the demo's
    defaults keepalive ('auto': every wait_timeout / 2) keeps the connections alive;
    with keepalive off the checkout's health check replaces the dead ones; with
    health checks off keepalive alone is enough."""
    db.set_global("wait_timeout", 2)
    env = demo_env(pool_max_size=MAX_SIZE, pool_timeout=5)
    if mode == "health_checks_only":
        env.update(demo_env(pool_keepalive="off"))
    if mode == "keepalive_only":
        env.update(demo_env(health_checks=0))
    server = serve(server=kind, workers=WORKERS, env=env)
    _fill_pools(server, db)
    time.sleep(3.0)
    results = _burst(server, clients=2 * WORKERS * MAX_SIZE, requests=60)
    assert _failures(results) == []
    pools = server.pool_stats()
    if mode in ("defaults", "keepalive_only"):
        assert "keepalive every 1.0s (server wait_timeout=2s)" in server.log()
        assert sum(p["keepalive_num"] for p in pools.values()) >= 2 * WORKERS, pools
        assert sum(p["connections_lost"] + p["keepalive_lost"] for p in pools.values()) == 0, pools
    else:
        assert sum(p["keepalive_num"] for p in pools.values()) == 0, pools
        assert sum(p["connections_lost"] for p in pools.values()) >= 1, pools
    assert "503 for" not in server.log()


@pytest.mark.parametrize("kind", DOC_SERVERS)
def test_wait_timeout_without_health_checks_or_keepalive_fails_one_request_per_connection(serve, db, kind):
    """Documented behaviour: with neither, each connection wait_timeout closed fails
    the request that takes it next (503), and is then replaced."""
    db.set_global("wait_timeout", 2)
    server = serve(server=kind, workers=WORKERS,
                   env=demo_env(pool_max_size=MAX_SIZE, pool_timeout=5, health_checks=0, pool_keepalive="off"))
    opened = _fill_pools(server, db)
    time.sleep(3.0)
    assert db.connection_count() == 0  # the server closed every one of them
    results = _burst(server, clients=2 * WORKERS * MAX_SIZE, requests=60)
    failures = _failures(results)
    print(f"{kind}: {len(failures)} of {len(results)} failed after wait_timeout closed {opened} idle connections")
    assert 1 <= len(failures) <= opened, failures
    assert all(status == 503 for status, _ in failures), failures
    assert _failures(_burst(server, clients=2 * WORKERS * MAX_SIZE, requests=60)) == []

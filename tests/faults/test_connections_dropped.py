"""The server drops pooled connections behind the pool's back: KILL CONNECTION, and
wait_timeout passing while they sit idle.

No request sees "MySQL server has gone away" / "Lost connection", with or without
CONN_HEALTH_CHECKS (the demo has it on; Django's default is off). Every checkout
first looks at the idle socket (no round trip): a session the server ended is
replaced unseen. With health checks a connection idle longer than check_window is
also pinged. keepalive 'auto' follows the shortest session wait_timeout.
"""

from __future__ import annotations

import http.client
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.faults.conftest import DOC_SERVERS, SERVERS, demo_env
from tests.support.serve import TimedLoad, scaled

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


@pytest.mark.parametrize("kind", SERVERS)
def test_kill_while_idle_with_djangos_defaults_fails_no_request(serve, db, kind):
    """CONN_HEALTH_CHECKS off (Django's default): the checkout's local probe sees
    that the server ended each killed session and replaces it, with no ping."""
    server = serve(server=kind, workers=WORKERS, env=demo_env(pool_max_size=MAX_SIZE, pool_timeout=5, health_checks=0))
    killed = _fill_pools(server, db)
    time.sleep(0.5)  # the FINs reach the workers' sockets
    db.kill_all()
    time.sleep(0.5)
    results = _burst(server, clients=2 * WORKERS * MAX_SIZE, requests=60)
    assert _failures(results) == []
    # The /read burst need not check out every idle connection (a busy machine serves it on
    # fewer): the /slow load that filled the pools does, and so finds the rest.
    _fill_pools(server, db)
    pools = server.pool_stats()
    assert sum(p["connections_lost"] for p in pools.values()) == killed, pools
    assert "503 for" not in server.log()


@pytest.mark.parametrize("kind", DOC_SERVERS)
def test_server_restart_while_idle_with_djangos_defaults_fails_no_request(serve, db, kind):
    server = serve(server=kind, workers=WORKERS, env=demo_env(pool_max_size=MAX_SIZE, pool_timeout=5, health_checks=0))
    _fill_pools(server, db)
    db.server.restart()  # every pooled session ends with the old server
    results = _burst(server, clients=2 * WORKERS * MAX_SIZE, requests=60)
    assert _failures(results) == []
    assert "503 for" not in server.log()
    assert db.connection_count() <= WORKERS * MAX_SIZE


# -- wait_timeout ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, mode",
    [(kind, mode) for mode in ("defaults", "health_checks_only") for kind in SERVERS]
    + [(kind, "keepalive_only") for kind in DOC_SERVERS],
)
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
def test_wait_timeout_without_health_checks_or_keepalive_fails_no_request(serve, db, kind):
    """With neither (keepalive off, CONN_HEALTH_CHECKS off) the server closes every
    idle connection; the checkout's probe sees each one closed and replaces it."""
    db.set_global("wait_timeout", 2)
    server = serve(
        server=kind,
        workers=WORKERS,
        env=demo_env(pool_max_size=MAX_SIZE, pool_timeout=5, health_checks=0, pool_keepalive="off"),
    )
    opened = _fill_pools(server, db)
    time.sleep(3.0)
    assert db.connection_count() == 0  # the server closed every one of them
    results = _burst(server, clients=2 * WORKERS * MAX_SIZE, requests=60)
    assert _failures(results) == []
    assert sum(p["connections_lost"] for p in server.pool_stats().values()) >= opened - WORKERS  # min_size refills


#: The scenario measured in issue 19, with Django's defaults: 10 trials in the full run.
TRIALS = scaled(10, 1)


@pytest.mark.parametrize("kind", DOC_SERVERS)
def test_wait_timeout_lowered_while_serving_then_burst_idle_requests_none_fails(serve, db, kind):
    """Workers start while wait_timeout is 28800 (keepalive 'auto' settles on its cap);
    then the server's GLOBAL wait_timeout drops to 3 s, a burst grows the pools with
    sessions that time out after 3 s, the site idles 8 s, and 60 requests follow on
    10 keep-alive connections. No request may fail."""
    failed, total = [], 0
    for trial in range(TRIALS):
        db.set_global("wait_timeout", 28800)
        server = serve(server=kind, workers=WORKERS, env=demo_env(pool_max_size=10, pool_timeout=5, health_checks=0))
        db.set_global("wait_timeout", 3)
        burst = _burst(server, clients=40, requests=40, path="/slow?s=0.05")
        assert _failures(burst) == []
        time.sleep(8)
        results = _keep_alive_requests(server.port, clients=10, requests=60)
        total += len(results)
        failed += [(trial, status, body[:200]) for status, body in results if status != 200]
        assert "keepalive every 1.5s (server wait_timeout=3s)" in server.log()
        server.stop()
    print(f"{kind}: {len(failed)} of {total} requests failed over {TRIALS} trials")
    assert failed == []


def _keep_alive_requests(port: int, clients: int, requests: int, path: str = "/read"):
    """``requests`` GETs spread over ``clients`` persistent HTTP connections."""

    def client(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        out = []
        try:
            for _ in range(n):
                conn.request("GET", path)
                resp = conn.getresponse()
                out.append((resp.status, resp.read()))
        finally:
            conn.close()
        return out

    share = [requests // clients + (i < requests % clients) for i in range(clients)]
    with ThreadPoolExecutor(clients) as pool:
        return [r for chunk in pool.map(client, share) for r in chunk]

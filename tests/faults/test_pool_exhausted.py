"""Every pooled connection is held by a slow query: requests that need one wait the
pool timeout and get a 503 with Retry-After (not a hang, not a 500); requests that
need no database are not slowed; the pool is healthy afterwards."""

from __future__ import annotations

import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.faults.conftest import SERVERS, demo_env
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.faults

WORKERS, MAX_SIZE, POOL_TIMEOUT, SLOW = 2, 2, 3.0, 5.0


def _hello_latencies(server: ServeProcess, ports: list[int], count: int) -> list[float]:
    out = []
    for i in range(count):
        elapsed, status, _, _ = server.timed_get("/hello", port=ports[i % len(ports)])
        assert status == 200
        out.append(elapsed)
    return out


def _free_port_pair() -> int:
    from tests.support.net import free_port

    for _ in range(50):
        base = free_port()
        if base < 65535 and _can_bind(base + 1):
            return base
    raise RuntimeError("no two consecutive free ports")


def _can_bind(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.parametrize("kind", SERVERS)
def test_exhausted_pool_answers_503_after_the_timeout_and_hello_is_not_slowed(serve, kind):
    # One port per worker, so the test knows which worker each request reaches.
    server = serve(
        "--worker-ports",
        server=kind,
        workers=WORKERS,
        port=_free_port_pair(),
        env=demo_env(pool_max_size=MAX_SIZE, pool_timeout=POOL_TIMEOUT),
    )
    ports = [server.port + i for i in range(WORKERS)]
    _hello_latencies(server, ports, 20)  # warm up
    baseline = _hello_latencies(server, ports, 60)

    with ThreadPoolExecutor(WORKERS * MAX_SIZE + WORKERS * 2) as pool:
        slow = [pool.submit(server.timed_get, f"/slow?s={SLOW}", port=port) for port in ports for _ in range(MAX_SIZE)]
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # wait until the slow queries hold every connection
            if all(p["pool_in_use"] == MAX_SIZE for p in server.pool_stats().values()):
                break
            time.sleep(0.05)
        t_held = time.monotonic()
        assert all(p["pool_in_use"] == MAX_SIZE for p in server.pool_stats().values()), server.pool_stats()
        waiting = [pool.submit(server.timed_get, path, port=port) for port in ports for path in ("/read", "/tx")]
        during = _hello_latencies(server, ports, 60)
        waited = [f.result(timeout=POOL_TIMEOUT + 10) for f in waiting]
        assert time.monotonic() - t_held < SLOW - 0.5, "the slow queries ended before the waiters timed out"
        slowed = [f.result(timeout=SLOW + 10) for f in slow]

    for elapsed, status, headers, body in waited:
        assert status == 503, (status, body)
        assert headers["retry-after"] == "1"
        assert body == (b"Service unavailable: the database is busy or unreachable (PoolTimeout). Retry shortly.\n")
        assert POOL_TIMEOUT - 0.2 <= elapsed < POOL_TIMEOUT + 2.5, elapsed
    assert [status for _, status, _, _ in slowed] == [200] * (WORKERS * MAX_SIZE)
    log = server.log()
    assert (
        len(
            re.findall(
                r"503 for GET /(read|tx): PoolTimeout: pool 'default': no connection free after waiting "
                rf"3\.\d\ds \(max_size={MAX_SIZE}, size={MAX_SIZE}, in use={MAX_SIZE}, waiting=\d, timeout=3\.0s\)",
                log,
            )
        )
        == 4
    ), log

    # /hello never waits for the pool: its latency under exhaustion stays near the unloaded one.
    base_median, during_median = statistics.median(baseline), statistics.median(during)
    print(
        f"{kind}: /hello median {base_median * 1000:.1f} ms unloaded, {during_median * 1000:.1f} ms with the pool "
        f"exhausted (max {max(during) * 1000:.1f} ms)"
    )
    assert during_median < base_median * 3 + 0.05, (baseline, during)
    assert max(during) < 1.0, during

    # Healthy after: every worker serves database pages again, nothing is left checked out.
    for port in ports:
        assert all(server.get(path, port=port)[0] == 200 for path in ("/read", "/tx") for _ in range(3))
    pools = server.pool_stats()
    assert all(
        p["pool_in_use"] == 0
        and p["requests_waiting"] == 0
        and p["pool_size"] <= MAX_SIZE
        and p["requests_timeouts"] == 2
        for p in pools.values()
    ), pools
    assert "Traceback" not in log and " 500 " not in log

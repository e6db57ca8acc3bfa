"""Memory: each worker's resident set stays flat over many requests.

100,000 requests per server (GREENPOOL_LOAD_SCALE unset); 10,000 with
GREENPOOL_LOAD_SCALE=ci, where the margin is wider (less warm-up, so more of the
allocator's first growth falls inside the measured window).

RSS is read from /proc after a warm-up, then after the measured requests. The
margins: 4 MiB per worker over 100,000 requests (a leak of more than ~42 bytes per
request fails it), 6 MiB over 10,000 in CI (~630 bytes per request). Measured here:
0.05 to 0.2 MiB of growth over 10,000 requests, on both servers.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import SERVERS, demo_env
from tests.support.serve import loadgen, rss_kib, scaled

pytestmark = [pytest.mark.faults, pytest.mark.load]

PATHS = ["/read", "/tx", "/hello", "/read"]


@pytest.mark.parametrize("kind", SERVERS)
def test_worker_rss_is_flat_over_many_requests(serve, db, kind):
    requests = scaled(100_000, 10_000)
    warmup = scaled(10_000, 2_000)
    margin_kib = scaled(4 * 1024, 6 * 1024)
    server = serve(server=kind, workers=2, env=demo_env(pool_max_size=4))
    urls = [server.url(p) for p in PATHS]
    warm = loadgen(urls, 20, warmup, 120)
    assert warm["failed"] == 0, warm
    pids = server.worker_pids()
    before = {i: rss_kib(pid) for i, pid in pids.items()}
    result = loadgen(urls, 20, requests, 600)
    after = {i: rss_kib(pid) for i, pid in pids.items()}
    growth = {i: after[i] - before[i] for i in pids}
    served = {w["index"]: w["requests"]["total"] for w in server.stats()["workers"]}
    print(
        f"{kind}: {result['ok']} requests at {result['rps']}/s; RSS KiB before {before}, after {after}, "
        f"growth {growth} (margin {margin_kib}); served per worker {served}"
    )
    assert result["failed"] == 0 and result["ok"] == requests, result
    assert server.worker_pids() == pids
    assert all(g <= margin_kib for g in growth.values()), growth
    pools = server.pool_stats()
    assert all(p["pool_size"] <= 4 and p["pool_in_use"] == 0 for p in pools.values()), pools

"""Faults inside a worker: a query cut off mid-flight by gevent.Timeout, and a worker
SIGKILLed under load."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.faults.conftest import SERVERS, demo_env
from tests.support.serve import TimedLoad

pytestmark = pytest.mark.faults


def test_query_cut_off_by_gevent_timeout_discards_its_connection(serve, db):
    """gevent.Timeout(0.1) around SELECT SLEEP(0.5) in a served request: with one
    worker and max_size=1 every request would get the same connection; the cut one is
    discarded, so no later request reads the rest of its answer ("Packet sequence
    number wrong") or a partial result."""
    server = serve(server="gevent", workers=1, env=demo_env(pool_max_size=1, pool_min_size=1, test_views=1))
    first = server.get_json("/test/session")["connection_id"]
    seen = {first}
    for round_ in range(5):
        assert server.get_json("/test/interrupted?s=0.5&timeout=0.1") == {
            "timed_out": True,
            "pid": server.worker_pids()[0],
        }
        # Straight after, while the server is still sleeping on the cut query.
        state = server.get_json("/test/session")
        assert state["connection_id"] not in seen, (round_, state, seen)
        seen.add(state["connection_id"])
        for _ in range(5):
            body = server.get_json("/read")
            assert len(body["items"]) == 3 and all("interrupted" not in json.dumps(i) for i in body["items"])
        assert server.get("/tx")[0] == 200
    pool = server.pool_stats()[0]
    assert pool["returns_bad"] == 5 and pool["pool_size"] == 1 and pool["pool_in_use"] == 0, pool
    log = server.log()
    assert "Packet sequence number wrong" not in log and "Traceback" not in log, log
    # PyMySQL closes a connection whose read was interrupted; either way the checkin discards it.
    assert log.count("discarding the connection") == 5, log


@pytest.mark.parametrize("kind", SERVERS)
def test_worker_sigkilled_under_load_is_replaced_and_its_connections_go(serve, db, kind):
    workers, max_size, wait_timeout = 2, 3, 3
    db.set_global("wait_timeout", wait_timeout)  # orphans the kernel did not close die by this
    server = serve(server=kind, workers=workers, env=demo_env(pool_max_size=max_size, pool_timeout=5))
    before = server.wait_workers(workers)
    clients = 12
    load = TimedLoad(server.port, ["/read", "/tx"], clients=clients, duration=30, timeout=20).start()
    try:
        time.sleep(2.0)
        t_kill = time.monotonic()
        os.kill(before[1], signal.SIGKILL)
        after = server.wait_workers(workers, timeout=20, exclude={before[1]})
        t_ready = time.monotonic()
        time.sleep(2.0)
    finally:
        samples = load.stop()
    assert after[0] == before[0] and after[1] != before[1]
    assert f"worker 1 (pid {before[1]}) died unexpectedly (exit signal 9 (SIGKILL))" in server.log()
    failed = [s for s in samples if not s.ok]
    report = "\n".join(s.describe(t_kill) for s in failed)
    print(
        f"{kind}: {len(samples)} requests, {len(failed)} failed; replacement ready {t_ready - t_kill:.2f}s after "
        f"the kill\n{report}"
    )
    # Only requests on the killed worker's connections fail (no answer, never a 5xx),
    # at most one per client: a client's next request goes to a live worker.
    assert len(failed) <= clients, report
    assert all(s.status is None for s in failed), report
    assert all(s.started < t_ready for s in failed), report
    assert all(s.ok for s in samples if s.started > t_ready), report
    # The replacement is ready, its pool open (with a shared socket which worker
    # accepts a new connection is the kernel's choice, so no request is aimed at it).
    replacement = [w for w in server.stats()["workers"] if w["index"] == 1][0]
    assert replacement["pid"] == after[1] and replacement["worker"]["databases_at_boot"] == {"default": "ok"}
    assert replacement["pools"]["default"]["pool_size"] >= 1

    # The server's connection count is back within the bound: the killed worker's
    # connections are gone (the kernel closed its sockets; wait_timeout catches the rest).
    count = db.wait_connection_count(lambda n: n <= workers * max_size, timeout=wait_timeout + 5)
    assert count <= workers * max_size, count
    pools = server.pool_stats()
    assert all(p["pool_size"] <= max_size and p["pool_in_use"] == 0 for p in pools.values()), pools

"""Idle resilience against a throwaway MariaDB whose wait_timeout the tests shorten.

The first request after a long quiet spell must find a live connection that was
kept alive in the background, and a restarted server must be refilled gently.
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

from greenpool import mysql as gpmysql
from greenpool.pool import Pool

pytestmark = pytest.mark.mysql

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

IDLE_SCRIPT = textwrap.dedent(
    """
    from gevent import monkey
    monkey.patch_all()
    import json, sys
    sys.path.insert(0, {root!r})
    import django, gevent
    from django.conf import settings
    P = {params!r}
    settings.configure(DATABASES={{"default": {{
        "ENGINE": "greenpool.backends.mysql", "NAME": P["database"], "USER": P["user"],
        "PASSWORD": P["password"], "HOST": P["host"], "PORT": str(P["port"]),
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {{"pool": {{"min_size": 2, "max_size": 4}}}},
    }}}}, INSTALLED_APPS=[])
    django.setup()
    from django.core.signals import request_finished, request_started
    from django.db import connection

    def request():
        request_started.send(sender=None)
        with connection.cursor() as cur:
            cur.execute("SELECT CONNECTION_ID()")
            (thread_id,) = cur.fetchone()
        request_finished.send(sender=None)
        return thread_id

    pool = connection.pool
    pool.open(wait=True, timeout=10)
    gevent.sleep(0.1)
    before_ids = set()
    for _ in range(20):
        before_ids.add(request())
    stats_before = pool.get_stats()
    gevent.sleep({idle})  # quiet: longer than the server's wait_timeout
    thread_id = request()
    stats_after = pool.get_stats()
    maintenance = pool._maintenance
    connection.close_pool()
    print(json.dumps({{
        "keepalive": pool.keepalive, "before_ids": sorted(before_ids), "after_id": thread_id,
        "connections_before": stats_before["connections_num"], "connections_after": stats_after["connections_num"],
        "keepalive_num": stats_after["keepalive_num"], "connections_lost": stats_after["connections_lost"],
        "task_dead_after_close": bool(maintenance.dead),
    }}))
    """
)


def test_first_request_after_idle_longer_than_wait_timeout_uses_a_kept_alive_connection(throwaway_mariadb):
    throwaway_mariadb.set_global("wait_timeout", 3)
    try:
        script = IDLE_SCRIPT.format(root=ROOT, params=throwaway_mariadb.params(), idle=10)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        out = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        throwaway_mariadb.set_global("wait_timeout", 28800)
    assert out["keepalive"] == 1.5, "keepalive 'auto' is half of the server's wait_timeout"
    assert out["keepalive_num"] >= 4, "idle connections were pinged in the background"
    assert out["after_id"] in out["before_ids"], "the request used a connection made before the idle period"
    assert out["connections_after"] == out["connections_before"], "no reconnect on the request path"
    assert out["connections_lost"] == 0
    assert out["task_dead_after_close"]


def test_refill_after_restart_is_gradual_and_desynchronised(throwaway_mariadb):
    """Two pools (two workers) with min_size=3 lose every connection in a
    restart. While the server is down their retries back off; when it is back
    each refills one connection at a time, never several connects at once."""
    params = throwaway_mariadb.params()
    connect_params = dict(
        host=params["host"],
        port=int(params["port"]),
        user=params["user"],
        password=params["password"],
        database=params["database"],
        autocommit=True,
        connect_timeout=2,
    )
    attempts: list[tuple[str, float, float, bool]] = []  # (pool, start, end, ok)
    lock = threading.Lock()

    def recording_connect(name):
        real = gpmysql.connect_factory(connect_params)

        def connect():
            start = time.monotonic()
            try:
                conn = real()
            except Exception:
                with lock:
                    attempts.append((name, start, time.monotonic(), False))
                raise
            with lock:
                attempts.append((name, start, time.monotonic(), True))
            return conn

        return connect

    pools = [
        Pool(
            recording_connect(name),
            name=name,
            min_size=3,
            max_size=3,
            keepalive=0.3,
            ping=gpmysql.check,
            reconnect_backoff=0.1,
            reconnect_backoff_max=1.0,
            concurrency="threads",
        )
        for name in ("worker-1", "worker-2")
    ]
    try:
        for pool in pools:
            pool.open(wait=True, timeout=10)
        throwaway_mariadb.stop()
        down_at = time.monotonic()
        time.sleep(3)
        throwaway_mariadb.start()
        up_at = time.monotonic()
        deadline = up_at + 20
        while time.monotonic() < deadline and not all(p.get_stats()["pool_available"] == 3 for p in pools):
            time.sleep(0.1)
        assert all(p.get_stats()["pool_available"] == 3 for p in pools), [p.get_stats() for p in pools]
    finally:
        for pool in pools:
            pool.close()
    for name in ("worker-1", "worker-2"):
        mine = sorted((a for a in attempts if a[0] == name and a[1] >= down_at), key=lambda a: a[1])
        failed_while_down = [a for a in mine if not a[3] and a[1] < up_at]
        # A tight retry loop would make hundreds of attempts in 3 s; back-off
        # (0.1 s doubling to 1 s, with jitter) makes a handful.
        assert 1 <= len(failed_while_down) <= 12, len(failed_while_down)
        # One at a time: no two connects of one pool overlap.
        for earlier, later in zip(mine, mine[1:]):
            assert later[1] >= earlier[2] - 0.001, (earlier, later)
        assert sum(1 for a in mine if a[3]) == 3
    # Desynchronised: the jitter (0.5-1.5x each wait) gives the two pools
    # different intervals between their failed attempts; without it both would
    # wait exactly 0.1, 0.2, 0.4 ... s and reconnect in step.
    intervals = []
    for name in ("worker-1", "worker-2"):
        starts = sorted(a[1] for a in attempts if a[0] == name and a[1] >= down_at and not a[3] and a[1] < up_at)
        intervals.append([b - a for a, b in zip(starts, starts[1:])])
    pairs = list(zip(*intervals))
    assert pairs, intervals
    assert max(abs(a - b) for a, b in pairs) > 0.05, intervals

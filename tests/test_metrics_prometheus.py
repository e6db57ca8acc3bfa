"""greenpool-serve --metrics-bind, scraped by a real Prometheus under load.

One master serves /metrics for both of its workers; Prometheus (Debian's
package, its own config and data directory) scrapes it every second, and the
assertions are PromQL answers from Prometheus's HTTP API.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
import uuid

import pytest

from greenpool.launch.errors import ExitCode
from tests.support import mysqlenv
from tests.support.net import free_port
from tests.support.prometheus import Prometheus
from tests.support.serve import ServeProcess, TimedLoad, cli

pytestmark = pytest.mark.mysql

WORKERS, MAX_SIZE = 2, 3
READ_VIEW = "greenpool.demo.views.read"


@pytest.fixture
def demo_db(mysql_params):
    name = f"gp_metrics_{uuid.uuid4().hex[:10]}"
    conn = mysqlenv.connect(mysql_params)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield {**mysql_params, "database": name}
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def serving(tmp_path, demo_db):
    metrics_port = free_port()
    server = ServeProcess(
        tmp_path,
        demo_db,
        f"--metrics-bind=127.0.0.1:{metrics_port}",
        workers=WORKERS,
        env={"GREENPOOL_DEMO_POOL_MAX_SIZE": str(MAX_SIZE), "GREENPOOL_DEMO_POOL_TIMEOUT": "5"},
    )
    server.start()
    try:
        yield server, metrics_port
    finally:
        server.stop()


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def test_prometheus_scrapes_pools_holds_and_requests_of_every_worker(tmp_path, serving, demo_db):
    server, metrics_port = serving
    with Prometheus(tmp_path, [f"127.0.0.1:{metrics_port}"]) as prom:
        prom.wait_for("up == 1")
        with TimedLoad(server.port, ["/read", "/slow?s=0.05"], clients=4 * WORKERS * MAX_SIZE, duration=6) as load:
            pass
        samples = load.stop()
        assert samples and all(s.ok for s in samples), [s.describe(0) for s in samples if not s.ok][:5]

        # Every request was counted, by the worker that served it (a scrape or two later).
        deadline = time.monotonic() + 15
        counted = None
        while time.monotonic() < deadline and counted != len(samples):
            time.sleep(0.5)
            counted = prom.value('sum(greenpool_serve_requests_total{status_class="2xx"})')
        assert counted == len(samples)

        workers = prom.query("count by (worker) (greenpool_pool_connections)")
        assert len(workers) == WORKERS, workers
        # The bound, as Prometheus saw it over the load: never above workers x max_size.
        peak_in_use = prom.value("max_over_time(sum(greenpool_pool_connections_in_use)[1m:1s])")
        assert peak_in_use is not None and 1 <= peak_in_use <= WORKERS * MAX_SIZE
        assert prom.value("max(greenpool_pool_max_connections)") == MAX_SIZE
        # Which views held connections, and for how long.
        holds = prom.value(f'sum(greenpool_pool_connection_hold_seconds_count{{view="{READ_VIEW}"}})')
        assert holds is not None and holds >= 1
        slow_p50 = prom.value(
            "histogram_quantile(0.5, sum by (le) (greenpool_pool_connection_hold_seconds_bucket"
            '{view="greenpool.demo.views.slow"}))'
        )
        assert slow_p50 is not None and slow_p50 >= 0.05  # each /slow holds its connection through SLEEP(0.05)
        assert prom.value("sum(greenpool_pool_checkout_wait_seconds_count)") >= len(samples)

    text = _scrape(metrics_port)
    for secret in (demo_db["database"], f":{demo_db['port']}", "password"):
        assert secret not in text


def test_a_replaced_worker_takes_its_series_with_it_and_counts_as_a_restart(tmp_path, serving):
    server, metrics_port = serving
    with Prometheus(tmp_path, [f"127.0.0.1:{metrics_port}"]) as prom:
        before = {r["metric"]["worker"] for r in prom.wait_for("greenpool_pool_connections")}
        assert len(before) == WORKERS
        victim = sorted(server.worker_pids().values())[0]
        os.kill(victim, signal.SIGKILL)
        server.wait_workers(WORKERS, exclude={victim})
        deadline = time.monotonic() + 20
        labels = before
        while time.monotonic() < deadline:
            labels = {r["metric"]["worker"] for r in prom.query("greenpool_pool_connections")}
            if len(labels) == WORKERS and not any(label.endswith(f"-{victim}") for label in labels):
                break
            time.sleep(0.5)
        assert len(labels) == WORKERS and not any(label.endswith(f"-{victim}") for label in labels), labels
        assert prom.wait_for('greenpool_serve_worker_restarts_total{reason="died"} == 1')


def test_metrics_bind_that_cannot_be_bound_fails_at_startup_naming_it(tmp_path, demo_db):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = ServeProcess(tmp_path, demo_db, f"--metrics-bind=127.0.0.1:{port}", workers=1)
        server.start(wait=False)
        code = server.wait_exit(60)
    assert code == ExitCode.BIND_ERROR, server.log()[-2000:]
    assert f"cannot bind 127.0.0.1:{port}" in server.log()
    assert not server.group_alive()


def test_metrics_bind_must_be_a_tcp_address():
    result = cli("--metrics-bind", "unix:/tmp/greenpool-metrics.sock", "--print-config")
    assert result.returncode == ExitCode.USAGE
    assert "--metrics-bind" in result.stderr and "expected HOST:PORT" in result.stderr

"""greenpool/metrics_exporter.py: /metrics for a Celery host. A real Celery
prefork worker (Redis broker) with GREENPOOL_METRICS_DIR set; each child writes
its snapshot to the spool, and the exporter answers a scrape for all of them."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.net import free_port, wait_for_port
from tests.support.procs import stop_process_group

pytestmark = pytest.mark.mysql


def _checkouts_by_pid(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {
        s.labels["pid"]: s.value
        for f in text_string_to_metric_families(text)
        if f.name == "greenpool_pool_checkouts"
        for s in f.samples
    }


def test_exporter_shows_every_celery_child_with_its_checkouts(tmp_path, mysql_params):
    pytest.importorskip("celery")
    from tests.support import redis_server
    from tests.support.celery_worker import CeleryWorker, per_process, project_database

    spool = tmp_path / "spool"
    port = free_port()
    with redis_server.redis_url() as broker, project_database(mysql_params) as database:
        worker = CeleryWorker(broker, mysql_params, database, pool="prefork", concurrency=2, workdir=tmp_path)
        worker.env["GREENPOOL_METRICS_DIR"] = str(spool)
        with worker:
            results = worker.run("celeryproj.reads", [[[1, 2, 3]]] * 40)
            children = {str(pid) for pid in per_process(results)}
            exporter = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "greenpool.metrics_exporter",
                    "--dir",
                    str(spool),
                    "--bind",
                    f"127.0.0.1:{port}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            try:
                wait_for_port("127.0.0.1", port, timeout=20)
                # Each child rewrites its file every few seconds (metrics.SPOOL_INTERVAL).
                deadline = time.monotonic() + 20
                seen: dict[str, float] = {}
                while time.monotonic() < deadline:
                    seen = _checkouts_by_pid(port)
                    if children <= set(seen) and sum(seen[pid] for pid in children) >= len(results):
                        break
                    time.sleep(0.5)
                assert children <= set(seen), (children, seen)
                assert sum(seen[pid] for pid in children) >= len(results)
            finally:
                stop_process_group(exporter, grace=10)


def test_exporter_that_cannot_bind_says_so(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "greenpool.metrics_exporter", "--dir", str(tmp_path), "--bind", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 5
    assert f"cannot bind 127.0.0.1:{port}" in done.stderr

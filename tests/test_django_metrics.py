"""greenpool/django_metrics.py: /metrics as a Django view under gunicorn -k gevent
with two workers, each writing its snapshot to GREENPOOL_METRICS_DIR, so that
whichever worker answers the scrape shows both."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.net import free_port, wait_for_port
from tests.test_backend_django_tools import ROOT, project_env  # noqa: F401 (a fixture)

pytestmark = pytest.mark.mysql


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as resp:
        assert resp.status == 200
        return resp.read()


def _pids_in(text: str, family: str) -> set[str]:
    return {s.labels["pid"] for f in text_string_to_metric_families(text) if f.name == family for s in f.samples}


def test_metrics_view_under_gunicorn_shows_every_worker_and_the_views_that_held_connections(project_env, tmp_path):  # noqa: F811
    pytest.importorskip("gunicorn")
    env, _db = project_env
    spool = tmp_path / "metrics"
    env = {**env, "GREENPOOL_METRICS_DIR": str(spool)}
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "tests.djproject.wsgi:application",
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        # Until both workers have served (and so made their pools and spool files).
        deadline = time.monotonic() + 30
        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as executor:
            while time.monotonic() < deadline and len(list(spool.glob("greenpool-*.json"))) < 2:
                list(executor.map(lambda _: _get(port, "/conn?sleep=0.01"), range(40)))
        files = sorted(spool.glob("greenpool-*.json"))
        assert len(files) == 2, files
        worker_pids = {f.stem.split("-")[1] for f in files}

        text = _get(port, "/metrics").decode()
        assert _pids_in(text, "greenpool_pool_connections") == worker_pids
        holds = [
            s
            for f in text_string_to_metric_families(text)
            if f.name == "greenpool_pool_connection_hold_seconds"
            for s in f.samples
            if s.name.endswith("_count")
        ]
        assert {s.labels["view"] for s in holds} == {"conn"}  # the URL pattern's name

        # A worker killed without cleaning up: gunicorn replaces it; its file goes at the next scrape.
        victim = sorted(worker_pids)[0]
        os.kill(int(victim), signal.SIGKILL)
        deadline = time.monotonic() + 30
        seen = worker_pids
        while time.monotonic() < deadline and victim in seen:
            seen = _pids_in(_get(port, "/metrics").decode(), "greenpool_pool_connections")
            time.sleep(0.2)
        assert victim not in seen
        assert not (spool / f"greenpool-{victim}.json").exists()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)

"""Sustained mixed load through real servers: no errors, bounded connections, consistent pool stats.

500 concurrent keep-alive clients (wrk, a separate process) send reads, transactions
and slow queries (tests/load/mix.lua: 6 x /read, 3 x /tx, 1 x /slow?s=0.05 in every
ten requests) to the demo site under greenpool-serve -w 2 (gevent, Tornado, and
gevent behind nginx when nginx is installed). Meanwhile a thread polls the server's
PROCESSLIST for the connections to the test's own database. Afterwards:

* wrk saw no error at all (no non-2xx, no timeout, no socket error) and the workers
  answered no 4xx/5xx;
* the server never had more than workers x max_size connections to the test's own
  database,
  and no worker's pool grew past max_size;
* the pool stats add up: every request the workers answered checked out exactly one
  connection, and every checkout was checked in (nothing in use, nobody waiting, no
  pool timeout, no leak reported).

GREENPOOL_LOAD_SCALE: unset, the full run (40 s per server); "ci", the bounded run CI
does by default (6 s per server, the module in well under a minute). Both at 500 clients.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.support import mysqlenv
from tests.support.net import free_port

pytestmark = [pytest.mark.load, pytest.mark.mysql]

ROOT = Path(__file__).resolve().parents[2]
MIX = Path(__file__).with_name("mix.lua")
SCALE = os.environ.get("GREENPOOL_LOAD_SCALE", "").strip().lower()
CLIENTS = 500
SECONDS = 6 if SCALE == "ci" else 40
# Requests the run must at least reach (a 2-core machine shared with other test runs).
MIN_REQUESTS = 300 if SCALE == "ci" else 2000
WORKERS = 2
MAX_SIZE = 5  # the demo's pool (GREENPOOL_DEMO_POOL_MAX_SIZE)
# A database of this test session's own (others may run this module at the same time).
DATABASE = f"greenpool_load_{os.getpid()}"
WRK_TIMEOUT_S = 15


@pytest.fixture(scope="module")
def load_db(mysql_params) -> Any:
    """The shared server, with a database of this session's own: PROCESSLIST rows with
    that DB are exactly the connections of the servers under test. Dropped afterwards."""
    conn = mysqlenv.connect(mysql_params)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`")
    finally:
        conn.close()
    yield {**mysql_params, "database": DATABASE}
    conn = mysqlenv.connect(mysql_params)
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{DATABASE}`")
    finally:
        conn.close()


@pytest.fixture(scope="module")
def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("wrk is not installed (.ci/bootstrap.sh installs it)", pytrace=False)
        pytest.skip("wrk is not installed (apt-get install wrk)")
    return found


class Serve:
    """greenpool-serve (and optionally nginx in front), in sessions of their own."""

    def __init__(self, tmp: Path, db: dict[str, Any], server: str, nginx: bool) -> None:
        self.tmp = tmp
        self.server = server
        self.port = _free_ports(WORKERS) if nginx else free_port()
        self.front = free_port() if nginx else self.port
        self.control = str(tmp / "control")
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("GREENPOOL_") and k != "DJANGO_SETTINGS_MODULE"
        }
        self.env.update(
            {
                "GREENPOOL_MYSQL_HOST": str(db["host"]),
                "GREENPOOL_MYSQL_PORT": str(db["port"]),
                "GREENPOOL_MYSQL_USER": str(db["user"]),
                "GREENPOOL_MYSQL_PASSWORD": str(db["password"]),
                "GREENPOOL_MYSQL_DATABASE": DATABASE,
                "GREENPOOL_DEMO_POOL_MAX_SIZE": str(MAX_SIZE),
                "PYTHONPATH": str(ROOT),
            }
        )
        argv = [
            sys.executable,
            "-m",
            "greenpool.launch",
            "--server",
            server,
            "-w",
            str(WORKERS),
            "-b",
            f"127.0.0.1:{self.port}",
            "--control-dir",
            self.control,
            "--log-level",
            "warning",
        ]
        if nginx:
            argv.append("--worker-ports")
        self.procs: list[subprocess.Popen] = [self._spawn(argv, "serve.log")]
        if nginx:
            from bench import nginx_conf

            conf = nginx_conf.write(tmp, app_port=self.port, workers=WORKERS, listen_port=self.front)
            self.nginx_source = nginx_conf.last_source.get("source")
            self.procs.append(self._spawn(nginx_conf.command(tmp, conf), "nginx.log"))

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen:
        with open(self.tmp / log, "wb") as out:
            return subprocess.Popen(
                argv,
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def logs(self) -> str:
        return "\n".join(
            (self.tmp / name).read_text(errors="replace")[-4000:]
            for name in ("serve.log", "nginx.log")
            if (self.tmp / name).exists()
        )

    def stats(self) -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "greenpool.launch", "stats", "--json", "--control-dir", self.control],
            capture_output=True,
            text=True,
            timeout=20,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        return json.loads(proc.stdout)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise AssertionError(f"exited with {proc.returncode} before it was ready:\n{self.logs()}")
            try:
                workers = self.stats().get("workers", [])
                ready = [w for w in workers if w.get("state") == "ready"]
                if len(ready) == WORKERS and _get(self.front, "/hello") == 200:
                    return
            except (ValueError, OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready after {timeout}s:\n{self.logs()}")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM if proc is self.procs[0] else signal.SIGQUIT)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the sessions we started, nothing else
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait(timeout=10)


def _free_ports(count: int) -> int:
    import socket

    for _ in range(100):
        base = free_port()
        ok = True
        for port in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no consecutive free ports")


def _get(port: int, path: str) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


class ConnectionWatch(threading.Thread):
    """The most connections to DATABASE the server had, polled every 50 ms."""

    def __init__(self, db: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.conn = mysqlenv.connect(db)
        self.peak = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                with self.conn.cursor() as cur:
                    cur.execute(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
                        (DATABASE,),
                    )
                    (count,) = cur.fetchone()
                self.peak = max(self.peak, int(count))
                self.samples += 1
            except pymysql.MySQLError:
                pass
            self.done.wait(0.05)

    def stop(self) -> int:
        self.done.set()
        self.join(timeout=5)
        self.conn.close()
        return self.peak


def _workers(stats: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {w["pid"]: w for w in stats["workers"] if w.get("state") == "ready"}


def _settled(serve: Serve, timeout: float = 30.0) -> dict[str, Any]:
    """Stats once every request has finished and every connection is back (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = serve.stats()
        busy = sum(w["requests"]["in_flight"] + w["pools"]["default"]["pool_in_use"] for w in stats["workers"])
        if busy == 0 or time.monotonic() > deadline:
            return stats
        time.sleep(0.2)


def _wrk(wrk: str, port: int) -> dict[str, Any]:
    argv = [
        wrk,
        "-t1",
        f"-c{CLIENTS}",
        f"-d{SECONDS}s",
        "--timeout",
        f"{WRK_TIMEOUT_S}s",
        "-s",
        str(MIX),
        f"http://127.0.0.1:{port}",
    ]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=SECONDS + WRK_TIMEOUT_S + 60, stdin=subprocess.DEVNULL
    )
    for line in proc.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON ") :])
    raise AssertionError(f"wrk gave no summary (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


VARIANTS = [
    pytest.param("gevent", False, id="gevent"),
    pytest.param("tornado", False, id="tornado"),
    pytest.param("gevent", True, id="gevent-behind-nginx"),
]


@pytest.mark.timeout(SECONDS * 3 + 240)
@pytest.mark.parametrize("server,behind_nginx", VARIANTS)
def test_mixed_load_500_clients(tmp_path, load_db, wrk_binary, server, behind_nginx):
    if behind_nginx:
        from bench import nginx_conf

        if nginx_conf.find_nginx() is None:
            if os.environ.get("CI") == "true":
                pytest.fail("nginx is not installed (.ci/bootstrap.sh installs it)", pytrace=False)
            pytest.skip("nginx is not installed")
    serve = Serve(tmp_path, load_db, server, behind_nginx)
    try:
        serve.wait_ready()
        before = _workers(serve.stats())
        watch = ConnectionWatch(load_db)
        watch.start()
        try:
            result = _wrk(wrk_binary, serve.front)
        finally:
            peak = watch.stop()
        after_stats = _settled(serve)
        after = _workers(after_stats)
    finally:
        serve.stop()

    errors = result["errors"]
    rate = result["requests"] / (result["duration_us"] / 1e6)
    summary = (
        f"{server}{' behind nginx' if behind_nginx else ''}: {result['requests']} requests in "
        f"{result['duration_us'] / 1e6:.1f}s ({rate:.0f}/s) from {CLIENTS} clients, p50 "
        f"{result['latency_us']['p50'] / 1000:.0f} ms, p99 {result['latency_us']['p99'] / 1000:.0f} ms; "
        f"wrk errors {errors}; peak server connections {peak} ({watch.samples} samples)"
    )
    print(summary)

    assert result["requests"] >= MIN_REQUESTS, summary
    assert all(v == 0 for v in errors.values()), summary

    assert set(after) == set(before), f"workers changed during the run: {sorted(before)} -> {sorted(after)}"
    bound = WORKERS * MAX_SIZE
    assert 0 < peak <= bound, f"{peak} server connections, bound {bound}: {summary}"

    answered = 0
    for pid, worker in after.items():
        was = before[pid]
        requests = {
            k: worker["requests"][k] - was["requests"][k] for k in ("total", "status_2xx", "status_4xx", "status_5xx")
        }
        pool, pool_was = worker["pools"]["default"], was["pools"]["default"]
        checkouts = pool["requests_num"] - pool_was["requests_num"]
        where = f"worker {worker['index']} (pid {pid}): requests {requests}, pool {pool}"
        assert requests["status_4xx"] == 0 and requests["status_5xx"] == 0, where
        assert requests["total"] == requests["status_2xx"], where
        # Every request of the mix uses the database: one checkout each, all checked in.
        assert checkouts == requests["total"], where
        assert worker["requests"]["in_flight"] == 0, where
        assert pool["pool_in_use"] == 0 and pool["requests_waiting"] == 0, where
        assert pool["pool_max"] == MAX_SIZE and pool["pool_size"] <= MAX_SIZE, where
        assert pool["requests_timeouts"] == 0 and pool["requests_errors"] == 0, where
        assert pool["leaks_reported"] == 0, where
        answered += requests["status_2xx"]
    # The workers answered at least what wrk counted (nginx may pass a request cut at
    # the end of the run to a worker after wrk stopped counting).
    assert answered >= result["requests"], f"workers answered {answered}, wrk counted {result['requests']}"

"""`make run` (python -m greenpool.launch.demo_run): the demo site behind a real
nginx from a project-local prefix, stopped cleanly by TERM or Ctrl-C (INT)."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.net import free_port
from tests.support.nginx import nginx_binary
from tests.support.procs import pid_alive
from tests.test_launch_serve import database, free_port_range  # noqa: F401  (database: a fixture)

pytestmark = [pytest.mark.mysql, pytest.mark.nginx]


def start_demo_run(tmp_path, mysql_params, database, port: int, app_port: int) -> tuple[subprocess.Popen, Path]:  # noqa: F811
    """``python -m greenpool.launch.demo_run`` (what `make run` runs) on the test's own
    ports, database and nginx prefix, in a session of its own; its output goes to
    the returned file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENPOOL_")}
    env.update(
        {
            "GREENPOOL_RUN_PORT": str(port),
            "GREENPOOL_RUN_APP_PORT": str(app_port),
            "GREENPOOL_RUN_PREFIX": str(tmp_path / "nginx"),
            "GREENPOOL_MYSQL_DATABASE": database,
            **{f"GREENPOOL_MYSQL_{k.upper()}": str(v) for k, v in mysql_params.items() if k != "database"},
        }
    )
    out = tmp_path / "run.log"
    with open(out, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "greenpool.launch.demo_run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc, out


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_run_serves_the_demo_behind_nginx_and_stops_both(tmp_path, mysql_params, database, signum):  # noqa: F811
    nginx_binary()
    port, app_port = free_port(), free_port_range(2)
    prefix = tmp_path / "nginx"
    proc, out = start_demo_run(tmp_path, mysql_params, database, port, app_port)
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C stops both" not in out.read_text(errors="replace"):
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        text = out.read_text()
        assert f"http://127.0.0.1:{port}/hello" in text and "/whoami" in text
        assert re.search(r"workers answering through nginx: 0-\d+, 1-\d+", text), text
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/whoami")
        resp = conn.getresponse()
        who = json.loads(resp.read())
        conn.close()
        assert resp.status == 200 and resp.getheader("Server", "").startswith("nginx")
        assert who["remote_addr"] == "127.0.0.1"
        nginx_pid = int((prefix / "nginx.pid").read_text())
        master_pid = int(re.search(r"greenpool-serve master pid (\d+)", text).group(1))
        os.kill(proc.pid, signum)
        assert proc.wait(60) == 0, out.read_text()
        text = out.read_text()
        assert "stopped: greenpool-serve exit 0, nginx exit 0" in text, text
        assert not pid_alive(nginx_pid) and not pid_alive(master_pid)
        assert not (prefix / "nginx.pid").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_ctrl_c_while_the_server_starts_stops_it_at_once(tmp_path, mysql_params, database):  # noqa: F811
    nginx_binary()
    port, app_port = free_port(), free_port_range(2)
    proc, out = start_demo_run(tmp_path, mysql_params, database, port, app_port)
    try:
        deadline = time.monotonic() + 60
        while not (match := re.search(r"greenpool-serve master pid (\d+)", out.read_text(errors="replace"))):
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.05)
        master_pid = int(match.group(1))
        os.kill(proc.pid, signal.SIGINT)  # the workers are still booting
        assert proc.wait(60) == 0, out.read_text()
        text = out.read_text()
        assert "SIGINT while waiting for greenpool-serve: stopping" in text, text
        assert "Ctrl-C stops both" not in text, text
        assert not pid_alive(master_pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_run_refuses_a_taken_port(tmp_path):
    nginx_binary()
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    try:
        env = dict(os.environ, GREENPOOL_RUN_PORT=str(taken), GREENPOOL_RUN_PREFIX=str(tmp_path / "n"))
        proc = subprocess.run(
            [sys.executable, "-m", "greenpool.launch.demo_run"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=tmp_path,
        )
    finally:
        holder.close()
    assert proc.returncode == 1
    assert f"port(s) {taken}" in proc.stderr and "are taken" in proc.stderr, proc.stderr

"""Secrets and exposure.

* The database password never appears in the worker logs (at DEBUG level too), in
  error pages and 503 bodies, in `greenpool-serve stats` (table and JSON), in the
  repr() of the pool, the pooled connection or Django's wrapper, in --print-config,
  or on the command lines of the master and workers. (The wrong-password message is
  checked in test_bad_input.py.)
* Stats are served only on unix sockets in a private control directory: no TCP
  port but the --bind addresses is open, and the HTTP site has no stats page.
* X-Forwarded-For / X-Real-IP / X-Forwarded-Proto are honoured only from
  --forwarded-allow-ips peers.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
import uuid

import pytest

from tests.faults.conftest import SERVERS, demo_env
from tests.support.serve import cli

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("kind", SERVERS)
def test_password_never_appears_in_logs_pages_stats_reprs_or_config(serve, db, kind):
    password = f"Pw-{uuid.uuid4().hex}"
    user = db.create_user(password)
    server = serve(
        "--log-level",
        "debug",
        "--access-logfile",
        "-",
        server=kind,
        workers=1,
        db_params=db.params(user=user, password=password),
        env=demo_env(pool_max_size=1, pool_timeout=1, test_views=1),
    )
    pages = []
    for path in ("/read", "/tx", "/healthz", "/whoami", "/test/reprs", "/test/session"):
        for _ in range(3):
            status, headers, body = server.get(path)
            assert status == 200, (path, body[:300])
            pages.append(body)
    reprs = server.get_json("/test/reprs")
    assert reprs["pool"].startswith("<Pool 'default' ") and reprs["connection"].startswith("<PooledConnection ")
    assert user in reprs["connection"] and "@127.0.0.1:" in reprs["connection"]
    # A 500 and a pool-timeout 503 (every connection held by a slow query).
    status, _, body = server.get("/test/bad_sql")
    assert status == 500
    pages.append(body)
    ports_busy = []
    slow = [threading.Thread(target=lambda: ports_busy.append(server.get("/slow?s=2.5")[0])) for _ in range(2)]
    for thread in slow:
        thread.start()
    time.sleep(0.5)
    status, _, body = server.get("/read")
    assert status == 503 and b"PoolTimeout" in body, body
    pages.append(body)
    for thread in slow:
        thread.join(30)

    outputs = {"page": b"\n".join(pages).decode(errors="replace"), "repr": json.dumps(reprs)}
    table = cli("stats", "--control-dir", server.control_dir)
    as_json = cli("stats", "--json", "--control-dir", server.control_dir)
    assert table.returncode == 0 and as_json.returncode == 0, table.stderr + as_json.stderr
    outputs["stats"] = table.stdout + table.stderr
    outputs["stats --json"] = as_json.stdout + as_json.stderr
    printed = cli("--print-config", "--server", kind, env=server.env)
    assert printed.returncode == 0, printed.stderr
    outputs["--print-config"] = printed.stdout + printed.stderr
    pids = [server.proc.pid, *server.worker_pids().values()]
    for pid in pids:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            outputs[f"command line of {pid}"] = f.read().replace(b"\0", b" ").decode(errors="replace")
    log = server.log()
    assert "[DEBUG]" in log, "the log has no DEBUG lines: the test did not look at DEBUG output"
    assert "503 for GET /read: PoolTimeout" in log and "no_such_column" in log
    outputs["log"] = log
    leaked = [where for where, text in outputs.items() if password in text]
    assert not leaked, f"the password appears in: {leaked}"


# -- exposure ----------------------------------------------------------------------------


def _listening_tcp(pid: int) -> set[str]:
    """host:port of the TCP sockets process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state != "0A" or inode not in inodes:  # 0A: LISTEN
                    continue
                host_hex, port_hex = local.split(":")
                if width == 8:
                    host = ".".join(str(int(host_hex[i : i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    host = f"[{host_hex}]"
                found.add(f"{host}:{int(port_hex, 16)}")
    return found


@pytest.mark.parametrize("kind", SERVERS)
def test_stats_are_served_only_on_private_unix_sockets(serve, kind):
    server = serve(server=kind, workers=2)
    pids = [server.proc.pid, *server.worker_pids().values()]
    for pid in pids:
        assert _listening_tcp(pid) == {f"127.0.0.1:{server.port}"}, (pid, _listening_tcp(pid))
    info = os.stat(server.control_dir)
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid(), oct(info.st_mode)
    sockets = [name for name in os.listdir(server.control_dir) if name.endswith(".sock")]
    assert len(sockets) == 2
    for name in sockets:
        mode = os.stat(os.path.join(server.control_dir, name)).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600, (name, oct(mode))
    for path in ("/stats", "/_stats", "/greenpool/stats", "/status"):
        assert server.get(path)[0] == 404, path


@pytest.mark.parametrize("mode", [0o777, 0o775])
def test_a_control_directory_others_can_write_is_refused(serve, tmp_path, mode):
    control = tmp_path / "shared-ctl"
    control.mkdir()
    os.chmod(control, mode)
    server = serve("--control-dir", str(control), wait=False)
    assert server.wait_exit() == 5, server.log()
    assert f"control directory {control} is not private (owner uid {os.getuid()}, mode {mode:04o})" in server.log()


def test_a_control_directory_others_can_only_read_is_accepted(serve, tmp_path):
    # e.g. <tmp>/greenpool-serve-<uid> made by an earlier version, or systemd's RuntimeDirectory= (0755)
    control = tmp_path / "readable-ctl"
    control.mkdir()
    os.chmod(control, 0o755)
    server = serve("--control-dir", str(control), workers=1)
    assert server.get("/hello")[0] == 200
    stats = cli("stats", "--json", "--control-dir", str(control))
    assert stats.returncode == 0 and len(json.loads(stats.stdout)["workers"]) == 1, stats.stderr


@pytest.mark.parametrize("kind", SERVERS)
def test_forwarded_headers_are_trusted_only_from_forwarded_allow_ips(serve, kind):
    server = serve("--forwarded-allow-ips", "127.0.0.2", server=kind, workers=1)
    forged = {"X-Forwarded-For": "203.0.113.7", "X-Real-IP": "203.0.113.8", "X-Forwarded-Proto": "https"}
    status, _, body = server.get("/whoami", headers=forged, source="127.0.0.1")
    assert status == 200
    assert json.loads(body)["remote_addr"] == "127.0.0.1" and json.loads(body)["scheme"] == "http"
    status, _, body = server.get("/whoami", headers=forged, source="127.0.0.2")
    assert status == 200
    assert json.loads(body)["remote_addr"] == "203.0.113.8" and json.loads(body)["scheme"] == "https"
    status, _, body = server.get(
        "/whoami", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"}, source="127.0.0.2"
    )
    assert json.loads(body)["remote_addr"] == "203.0.113.9"  # the last hop: the one the trusted proxy added

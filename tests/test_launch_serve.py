"""greenpool-serve end to end: real master and worker processes, real HTTP,
real MariaDB (the shared server from GREENPOOL_MYSQL_*).

Every server here serves the bundled demo site on a database of its own, so
SHOW PROCESSLIST rows with that db are exactly this server's connections.
The load test scales with GREENPOOL_LOAD_SCALE ("ci" = small).
"""

from __future__ import annotations

import ast
import datetime
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from greenpool.launch.errors import ExitCode
from tests.support import mysqlenv
from tests.support.net import free_port
from tests.support.procs import pid_alive
from tests.support.serve import ServeProcess, loadgen

pytestmark = pytest.mark.mysql

SERVERS = ["gevent", "tornado"]
READY_TIMEOUT = 60.0


def load_scale() -> float:
    raw = os.environ.get("GREENPOOL_LOAD_SCALE", "")
    if raw == "ci":
        return 0.4
    try:
        return float(raw) if raw else 1.0
    except ValueError:
        return 1.0


# -- helpers -------------------------------------------------------------------------


class Server(ServeProcess):
    """tests.support.serve.ServeProcess on this test's own database of the shared server,
    with the demo's pool at max_size 5 (the bounds the tests below assert)."""

    def __init__(
        self,
        tmp_path: Path,
        mysql_params: dict,
        database: str,
        *args: str,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            tmp_path,
            {**mysql_params, "database": database},
            *args,
            env={"GREENPOOL_DEMO_POOL_MAX_SIZE": "5", **(env or {})},
            **kwargs,
        )


def free_port_range(count: int) -> int:
    """A port P with P..P+count-1 all free now (for --worker-ports)."""
    for _ in range(50):
        base = free_port()
        if base + count > 65535:
            continue
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports found")


class ProcesslistPoller(threading.Thread):
    """Counts the server's connections to one database while a test runs."""

    def __init__(self, mysql_params: dict, database: str, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.conn = mysqlenv.connect(mysql_params)
        self.database = database
        self.interval = interval
        self.max = 0
        self.samples = 0
        self.stopped = threading.Event()

    def count(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = %s", (self.database,))
            return int(cur.fetchone()[0])

    def run(self) -> None:
        while not self.stopped.is_set():
            self.max = max(self.max, self.count())
            self.samples += 1
            time.sleep(self.interval)

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)
        self.conn.close()


def _status(admin, name: str) -> int:
    with admin.cursor() as cur:
        cur.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
        return int(cur.fetchone()[1])


@pytest.fixture
def database(mysql_params):
    """A database of this test's own, dropped afterwards."""
    name = f"gp_launch_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn = mysqlenv.connect(mysql_params)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}`")
    try:
        yield name
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


@pytest.fixture
def serve(tmp_path, mysql_params, database):
    """serve(*args, server=..., workers=...) -> a started Server, stopped at the end."""
    started: list[Server] = []

    def make(*args: str, wait: bool = True, **kwargs: Any) -> Server:
        server = Server(tmp_path, mysql_params, database, *args, **kwargs)
        started.append(server)
        return server.start(wait=wait)

    yield make
    for server in started:
        server.stop()


# -- serving ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_demo_endpoints_are_served_with_worker_header_and_access_log(serve, kind):
    server = serve("--access-logfile", "-", server=kind)
    status, headers, body = server.get("/hello")
    assert (status, body) == (200, b"hello\n")
    assert re.fullmatch(r"[01]-\d+", headers["x-greenpool-worker"])
    status, _, body = server.get("/read")
    assert status == 200 and len(json.loads(body)["items"]) == 3
    status, _, body = server.get("/tx")
    assert status == 200 and json.loads(body)["value"] >= 1
    assert server.get("/slow?s=0.01")[0] == 200
    assert server.get("/slow?s=6")[0] == 400  # bounded to 5 s
    assert server.get("/healthz")[:1] == (200,)
    status, headers, body = server.get("/whoami", headers={"X-Forwarded-For": "203.0.113.7"})
    who = json.loads(body)
    assert who["remote_addr"] == "203.0.113.7"  # 127.0.0.1 is a trusted proxy by default
    assert who["worker"] == headers["x-greenpool-worker"] and who["pid"] == int(who["worker"].split("-")[1])
    server.wait_log(r'"GET /whoami HTTP/1.1" 200')


def _chicago_settings(tmp_path: Path) -> dict[str, str]:
    """The demo with Django's default TIME_ZONE, which Django puts into each worker's TZ."""
    (tmp_path / "chicagosettings.py").write_text(
        "from greenpool.demo.settings import *\nTIME_ZONE = 'America/Chicago'\n"
    )
    return {"DJANGO_SETTINGS_MODULE": "chicagosettings"}


def _utc_seconds(stamp: str) -> float:
    assert stamp.endswith("+00:00"), stamp
    return datetime.datetime.fromisoformat(stamp).timestamp()


@pytest.mark.parametrize("kind", SERVERS)
def test_master_and_worker_lines_share_one_utc_clock_when_django_sets_another_zone(serve, tmp_path, kind):
    started = time.time()
    server = serve("--access-logfile", "-", server=kind, workers=1, env=_chicago_settings(tmp_path))
    assert server.get("/hello")[0] == 200
    server.wait_log(r'"GET /hello HTTP/1.1" 200')
    server.stop()
    stamps = re.findall(rf"^\[(\S+)\] \[\d+ (master|{kind}\.0)\]", server.log(), re.M)
    assert {who for _, who in stamps} == {"master", f"{kind}.0"}, server.log()[-3000:]
    for stamp, who in stamps:
        assert started - 2 <= _utc_seconds(stamp) <= time.time() + 2, (who, stamp)
    (access,) = re.findall(r'^\S+ - - \[([^]]+)\] "GET /hello HTTP/1.1" 200', server.log(), re.M)
    assert access.endswith(" +0000")


@pytest.mark.parametrize("kind", SERVERS)
def test_json_log_format_writes_one_object_per_line_for_server_and_access_lines(serve, tmp_path, kind):
    started = time.time()
    server = serve(
        "--log-format", "json", "--access-logfile", "-", server=kind, workers=1, env=_chicago_settings(tmp_path)
    )
    assert server.get("/hello?x=1")[0] == 200
    server.wait_log(r'"path": "/hello\?x=1"')
    server.stop()
    entries = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert {e["worker"] for e in entries} == {"master", f"{kind}.0"}
    for entry in entries:
        assert started - 2 <= _utc_seconds(entry["time"]) <= time.time() + 2, entry
        assert {"level", "pid", "logger", "message"} <= entry.keys()
    (access,) = [e for e in entries if e["logger"] == "greenpool.access"]
    assert (access["method"], access["path"], access["protocol"], access["status"]) == (
        "GET",
        "/hello?x=1",
        "HTTP/1.1",
        200,
    )
    assert access["duration_s"] >= 0 and access["length"] > 0
    assert any("workers ready" in e["message"] for e in entries if e["worker"] == "master")


@pytest.mark.parametrize("kind", SERVERS)
def test_keep_alive_responses_do_not_stall_on_nagle(serve, kind):
    # Without TCP_NODELAY a keep-alive response waits ~40 ms for the client's delayed ACK.
    server = serve(server=kind, workers=1)
    result = loadgen([server.url("/hello")], 1, 200, 20)
    assert result["failed"] == 0, result
    assert result["connects"] == 1
    assert result["latency_ms"]["p90"] < 20, result


def test_tornado_worker_answers_a_host_port_it_cannot_read_with_400_and_counts_it_finished(serve):
    # Tornado's WSGIContainer.environ() raises ValueError when the Host port is
    # not a number (pywsgi does not read it). The request was counted in flight
    # before that: uncounted, a graceful stop would wait for it in vain.
    server = serve("--access-logfile", "-", server="tornado", workers=1)
    for host in ("example.com:abc", "example.com:"):
        status, _, _ = server.get("/hello", headers={"Host": host})
        assert status == 400, host
    assert server.get("/hello")[0] == 200, "and the worker serves on"
    requests = server.stats()["workers"][0]["requests"]
    assert requests["in_flight"] == 0, requests
    assert requests["status_4xx"] == 2 and requests["total"] == 3, requests
    assert "Traceback" not in server.log()


def test_gevent_worker_closes_a_connection_whose_headers_stall_after_keep_alive(serve):
    server = serve("--keep-alive", "1", server="gevent", workers=1)
    with socket.create_connection(("127.0.0.1", server.port), timeout=15) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: localhost\r\n")  # and never the blank line
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(65536):  # until the worker closes the connection
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert 0.9 <= time.monotonic() - started < 10
    server.wait_log(r"request headers not complete after 1s \(--keep-alive\)")
    assert server.get("/hello")[0] == 200, "and the worker serves on"


def test_gevent_worker_patches_before_django_or_ssl_is_imported(serve):
    # The boot code: nothing but the "what was already imported" check runs
    # before patch_all() (imported_before_patch reports what the interpreter's
    # start-up, e.g. a .pth file, imported even earlier).
    from greenpool.launch.master import BOOT_CODE

    statements = ast.parse(BOOT_CODE["gevent"]).body
    patch_at = next(i for i, node in enumerate(statements) if "patch_all" in ast.unparse(node))
    before = [ast.unparse(node) for node in statements[:patch_at]]
    assert before == [
        "import sys",
        "_before = sorted((m for m in ('django', 'ssl', 'pymysql', 'greenpool') if m in sys.modules))",
        "from gevent import monkey",
    ], before
    server = serve(server="gevent", workers=1)
    server.get("/read")
    info = server.stats()["workers"][0]["worker"]
    assert info["imported_before_patch"] == []
    log = server.log()
    assert "Monkey-patching" not in log and "MonkeyPatchWarning" not in log


def test_tornado_threads_auto_are_the_default_pools_max_size(serve):
    server = serve(
        "--threads",
        "auto",
        "--log-level",
        "info",
        server="tornado",
        workers=1,
        env={"GREENPOOL_DEMO_POOL_MAX_SIZE": "3"},
    )
    assert server.get("/read")[0] == 200
    assert re.search(r"tornado worker \S+ ready: .*, 3 threads", server.log()), server.log()[-2000:]


def test_tornado_threads_given_on_the_command_line_are_kept(serve):
    server = serve("--threads", "7", "--log-level", "info", server="tornado", workers=1)
    assert server.get("/read")[0] == 200
    assert re.search(r"tornado worker \S+ ready: .*, 7 threads", server.log()), server.log()[-2000:]


def test_stats_command_prints_every_worker_and_its_pool(serve):
    server = serve(server="gevent", workers=2)
    for _ in range(10):
        server.get("/read")
    proc = subprocess.run(
        [sys.executable, "-m", "greenpool.launch", "stats", "--control-dir", server.control_dir],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"master {server.proc.pid} (gevent)" in proc.stdout
    pids = server.worker_pids()
    for pid in pids.values():
        assert re.search(rf"^\d\s+{pid} ready", proc.stdout, re.M), proc.stdout
        assert re.search(rf"^\d\s+{pid} default\s+\d/5", proc.stdout, re.M), proc.stdout
    data = json.loads(
        subprocess.run(
            [sys.executable, "-m", "greenpool.launch", "stats", "--control-dir", server.control_dir, "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    )
    assert sum(w["requests"]["total"] for w in data["workers"]) == 10
    # One checkout per request (the three reads of /read share it), plus the
    # one each worker makes at boot to check that the database answers.
    assert sum(w["pools"]["default"]["requests_num"] for w in data["workers"]) >= 10 + 2


@pytest.mark.load
@pytest.mark.parametrize("kind", SERVERS)
def test_500_clients_on_2_workers_use_at_most_10_connections(serve, mysql_params, database, kind):
    requests = max(1000, int(2500 * load_scale()))
    server = serve(server=kind, workers=2)
    poller = ProcesslistPoller(mysql_params, database)
    poller.start()
    try:
        result = loadgen([server.url("/read")], 500, requests, 90)
    finally:
        poller.stop()
    assert result["failed"] == 0 and result["ok"] == requests, result
    assert poller.samples > 10
    assert 0 < poller.max <= 10, f"{poller.max} connections seen (2 workers x max_size 5)"
    pools = [w["pools"]["default"] for w in server.stats()["workers"]]
    assert all(p["pool_size"] <= 5 and p["requests_timeouts"] == 0 for p in pools), pools
    # Every request gave its connection back (Tornado: in the executor thread that used it).
    assert all(p["pool_in_use"] == 0 for p in pools), pools


# -- supervision ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_term_lets_in_flight_slow_requests_finish_and_closes_pools_cleanly(serve, mysql_admin, kind):
    server = serve(server=kind, workers=2)
    # Aborted_clients is server-wide: if it moves while this test is idle,
    # someone else is using the server and the check below cannot be trusted.
    quiet_start = _status(mysql_admin, "Aborted_clients")
    time.sleep(0.5)
    aborted_before = _status(mysql_admin, "Aborted_clients")
    server_is_quiet = aborted_before == quiet_start
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(server.get, "/slow?s=1.5") for _ in range(8)]
        time.sleep(0.5)  # all eight are in their SELECT SLEEP now
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        results = [f.result(timeout=30) for f in futures]
    assert [r[0] for r in results] == [200] * 8
    assert all(r[1].get("connection") == "close" for r in results)  # no keep-alive during the drain
    assert server.wait_exit(30) == ExitCode.OK
    assert time.monotonic() - started < 10
    with pytest.raises(OSError):  # the sockets are closed
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    time.sleep(0.3)
    aborted_after = _status(mysql_admin, "Aborted_clients")
    if server_is_quiet:
        assert aborted_after == aborted_before, "a worker exited without closing its connections"
    assert "worker stopped after" in server.log()


@pytest.mark.parametrize("kind", SERVERS)
def test_hup_under_continuous_load_fails_no_request(serve, kind):
    server = serve(server=kind, workers=2)
    before = set(server.worker_pids().values())
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(loadgen, [server.url("/read")], 40, 10**6, 10)
        time.sleep(1.5)
        server.signal(signal.SIGHUP)
        server.wait_log(r"worker \d replaced", count=2, timeout=30)
        result = future.result(timeout=60)
    print("HUP under load:", json.dumps({k: result[k] for k in ("ok", "failed", "retried", "rps", "latency_ms")}))
    assert result["failed"] == 0, result
    assert result["ok"] > 500
    after = set(server.worker_pids().values())
    assert not before & after and len(after) == 2
    seen = {int(w.split("-")[1]) for w in result["workers"]}
    assert before <= seen and after & seen, (before, after, result["workers"])


@pytest.mark.parametrize("kind", SERVERS)
def test_max_requests_recycles_workers_without_failing_a_request(serve, kind):
    server = serve("--max-requests", "200", "--max-requests-jitter", "40", server=kind, workers=2)
    # Seven seconds of load: replacements go one at a time and each boots in ~1-2 s here.
    result = loadgen([server.url("/read")], 20, 10**6, 7)
    assert result["failed"] == 0, result
    assert result["ok"] > 1000
    # The replacement boots while the old worker still serves, so a worker may
    # pass its limit by a little; at least two replacements happened.
    assert len(result["workers"]) >= 4, result["workers"]
    assert len(re.findall(r"reached --max-requests: replacing it", server.log())) >= 2
    assert len(re.findall(r"worker \d replaced", server.log())) >= 2


def test_worker_with_a_blocked_event_loop_is_killed_after_timeout_and_replaced(serve, tmp_path):
    (tmp_path / "blockapp.py").write_text(
        "import time\n"
        "def app(environ, start_response):\n"
        "    if environ['PATH_INFO'] == '/block':\n"
        "        end = time.monotonic() + 60\n"
        "        while time.monotonic() < end:\n"
        "            pass  # CPU-bound: the gevent hub never runs, no heartbeat\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n"
    )
    server = serve("blockapp:app", "--timeout", "1.5", "--reuse-port", server="gevent", workers=1)
    before = server.worker_pids()[0]
    with pytest.raises(OSError):
        server.get("/block", timeout=1)
    server.wait_log(rf"worker 0 \(pid {before}\) silent for [\d.]+s \(--timeout=1.5s\): killing it", timeout=15)
    server.wait_log(r"gevent worker 0-\d+ ready", count=2, timeout=15)
    status, headers, body = server.get("/")
    assert (status, body) == (200, b"ok") and headers["x-greenpool-worker"] != f"0-{before}"


def test_ttin_and_ttou_add_and_remove_a_worker_on_its_own_port(serve):
    server = serve("--worker-ports", server="gevent", workers=2, port=free_port_range(3))
    ports = [server.port, server.port + 1]
    ids = {server.get("/whoami", port=p)[1]["x-greenpool-worker"].split("-")[0] for p in ports}
    assert ids == {"0", "1"}  # worker i on port + i
    server.signal(signal.SIGTTIN)
    server.wait_log("TTIN: 3 workers")
    server.wait_log(r"gevent worker 2-\d+ ready")
    assert server.get("/whoami", port=server.port + 2)[1]["x-greenpool-worker"].startswith("2-")
    server.signal(signal.SIGTTOU)
    server.wait_log(r"worker 2 \(pid \d+\) exited: 0 \(OK\)")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port + 2), timeout=2).close()
    assert server.get("/hello", port=server.port + 1)[0] == 200


def test_unix_socket_bind(serve, tmp_path):
    path = str(tmp_path / "gp.sock")
    server = serve(server="tornado", workers=1, bind=[f"unix:{path}"])

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(10)
            self.sock.connect(path)

    conn = UnixConnection("localhost")
    conn.request("GET", "/whoami", headers={"X-Forwarded-For": "198.51.100.9"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert json.loads(resp.read())["remote_addr"] == "198.51.100.9"  # unix-socket peers are trusted
    conn.close()
    server.stop()
    assert not os.path.exists(path)


# -- failures: a clear message and a named exit code ----------------------------------------


def test_bad_app_exits_with_app_load_error(serve):
    server = serve("no_such_module.wsgi:application", wait=False)
    assert server.wait_exit() == ExitCode.APP_LOAD_ERROR
    log = server.log()
    assert "cannot import APP 'no_such_module.wsgi:application': no module named 'no_such_module'" in log
    assert "failed to boot (exit 4 (APP_LOAD_ERROR)); stopping" in log


def test_app_without_the_callable_exits_with_app_load_error(serve, tmp_path):
    (tmp_path / "myapp.py").write_text("def app(environ, start_response):\n    return []\n")
    server = serve("myapp:application", wait=False)
    assert server.wait_exit() == ExitCode.APP_LOAD_ERROR
    assert "cannot load APP 'myapp:application': module 'myapp' has no attribute 'application'" in server.log()


def test_plain_wsgi_app_without_django_is_served(serve, tmp_path):
    (tmp_path / "plainapp.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'plain ' + environ['greenpool.worker'].encode()]\n"
    )
    server = serve("plainapp:app", workers=1)
    status, headers, body = server.get("/")
    assert status == 200 and body == b"plain " + headers["x-greenpool-worker"].encode()


@pytest.mark.parametrize("kind", SERVERS)
def test_bad_pool_settings_exit_with_config_error_at_boot(serve, tmp_path, kind):
    (tmp_path / "badsettings.py").write_text(
        "from greenpool.demo.settings import *\nDATABASES['default']['OPTIONS']['pool'] = {'max_size': 0}\n"
    )
    server = serve(server=kind, wait=False, env={"DJANGO_SETTINGS_MODULE": "badsettings"})
    assert server.wait_exit() == ExitCode.CONFIG_ERROR
    log = server.log()
    assert "invalid pool option max_size=0" in log
    assert "exit 3 (CONFIG_ERROR)" in log


def test_unreachable_database_with_require_db_exits_with_database_unavailable(serve):
    dead_port = free_port()
    server = serve("--require-db", wait=False, env={"GREENPOOL_MYSQL_PORT": str(dead_port)})
    assert server.wait_exit() == ExitCode.DATABASE_UNAVAILABLE
    assert f"127.0.0.1:{dead_port}" in server.log()


def test_check_config_loads_the_app_and_opens_the_pools(tmp_path, mysql_params, database):
    ok = Server(tmp_path, mysql_params, database, "--check-config")
    ok.start(wait=False)
    try:
        assert ok.wait_exit() == ExitCode.OK, ok.log()
        assert "configuration OK" in ok.log()
    finally:
        ok.stop()
    dead = Server(
        tmp_path,
        mysql_params,
        database,
        "--check-config",
        "--db-boot-timeout",
        "0.5",
        env={"GREENPOOL_MYSQL_PORT": str(free_port())},
    )
    dead.start(wait=False)
    try:
        assert dead.wait_exit() == ExitCode.DATABASE_UNAVAILABLE, dead.log()
    finally:
        dead.stop()


# -- paths, sockets and the master's own failures ---------------------------------------------


PLAIN_APP = (
    "import os, time\n"
    "def app(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'plain ' + environ['greenpool.worker'].encode()]\n"
)


def _plain(tmp_path: Path) -> str:
    (tmp_path / "plainapp.py").write_text(PLAIN_APP)
    return "plainapp:app"


def _without_control_dir(server: Server, tmpdir: Path) -> Server:
    """The server as a user starts it: the default control directory, under TMPDIR."""
    at = server.cmd.index("--control-dir")
    del server.cmd[at : at + 2]
    server.env["TMPDIR"] = str(tmpdir)
    return server


@pytest.fixture
def short_tmpdir():
    """A fresh TMPDIR with a short path (tmp_path is too long for the socket paths under it)."""
    path = Path(tempfile.mkdtemp(prefix="gp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _stats_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "greenpool.launch", "stats", *args], capture_output=True, text=True, timeout=30, env=env
    )


def test_default_control_dir_is_created_private_and_stats_finds_it(tmp_path, mysql_params, database, short_tmpdir):
    tmpdir = short_tmpdir
    server = _without_control_dir(Server(tmp_path, mysql_params, database, _plain(tmp_path), workers=1), tmpdir)
    try:
        server.start()
        root = tmpdir / f"greenpool-serve-{os.getuid()}"
        assert (root.stat().st_mode & 0o777, (root / f"127.0.0.1_{server.port}").stat().st_mode & 0o777) == (
            0o700,
            0o700,
        )
        proc = _stats_cli(server.env, "--bind", f"127.0.0.1:{server.port}")
        assert proc.returncode == 0, proc.stderr
        assert f"master {server.proc.pid} (gevent)" in proc.stdout
    finally:
        server.stop()
    assert server.proc.returncode == ExitCode.OK, server.log()


def test_long_unix_bind_gets_a_short_default_control_dir(tmp_path, mysql_params, database, short_tmpdir):
    tmpdir = short_tmpdir
    path = str(tmp_path / ("s" * (100 - len(str(tmp_path)) - 1)))  # a legal socket path, 100 bytes
    server = _without_control_dir(
        Server(tmp_path, mysql_params, database, _plain(tmp_path), workers=1, bind=[f"unix:{path}"]), tmpdir
    )
    try:
        server.start()
        proc = _stats_cli(server.env, "--bind", f"unix:{path}")
        assert proc.returncode == 0, proc.stderr
        assert f"master {server.proc.pid} (gevent)" in proc.stdout
    finally:
        server.stop()


def test_control_dir_too_long_for_a_socket_path_is_refused_naming_the_flag(tmp_path, mysql_params, database):
    long_dir = tmp_path / ("d" * (110 - len(str(tmp_path))))
    server = Server(tmp_path, mysql_params, database, _plain(tmp_path), workers=1)
    at = server.cmd.index("--control-dir")
    server.cmd[at + 1] = str(long_dir)
    server.start(wait=False)
    try:
        assert server.wait_exit(30) == ExitCode.USAGE, server.log()
        log = server.log()
        assert f"--control-dir {long_dir}" in log and "too long for a unix socket path" in log, log
        assert "Traceback" not in log
    finally:
        server.stop()


@pytest.mark.parametrize("flag", ["--error-logfile", "--access-logfile", "--pid", "--control-dir"])
def test_bad_path_is_one_line_naming_the_flag_and_the_os_error(tmp_path, mysql_params, database, flag):
    (tmp_path / "afile").write_text("")
    bad = str(tmp_path / "afile") if flag == "--control-dir" else str(tmp_path / "missing" / "x")
    sock = str(tmp_path / "gp.sock")
    server = Server(tmp_path, mysql_params, database, _plain(tmp_path), workers=1, bind=[f"unix:{sock}"])
    if flag == "--control-dir":
        at = server.cmd.index("--control-dir")
        server.cmd[at + 1] = bad
    else:
        server.cmd += [flag, bad]
    server.start(wait=False)
    try:
        assert server.wait_exit(30) == ExitCode.USAGE, server.log()
        log = server.log()
        why = "Not a directory" if flag == "--control-dir" else "No such file or directory"
        lines = [line for line in log.splitlines() if f"{flag} {bad}" in line]
        assert len(lines) == 1 and why in lines[0], log
        assert "Traceback" not in log
        assert not os.path.exists(sock)  # the master cleaned up what it had bound
    finally:
        server.stop()


def test_reuse_port_refuses_a_port_another_reuse_port_server_listens_on(tmp_path, mysql_params, database):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(8)
    port = holder.getsockname()[1]
    try:
        server = Server(tmp_path, mysql_params, database, _plain(tmp_path), "--reuse-port", workers=1, port=port)
        server.start(wait=False)
        try:
            assert server.wait_exit(15) == ExitCode.BIND_ERROR, server.log()
            assert f"cannot bind 127.0.0.1:{port}: address already in use" in server.log()
        finally:
            server.stop()
    finally:
        holder.close()


@pytest.mark.parametrize("kind", SERVERS)
def test_quick_stop_terminates_a_booting_worker_without_sigquit(serve, tmp_path, kind):
    # SIGQUIT's default action dumps core, and a booting worker has no handler for it yet.
    (tmp_path / "slowboot.py").write_text(
        "import os, time\n"
        "if os.environ['GREENPOOL_WORKER_INDEX'] == '1':\n"
        "    raise ImportError('worker 1 cannot boot')\n"
        "time.sleep(20)\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [])\n"
        "    return [b'']\n"
    )
    server = serve("slowboot:app", server=kind, workers=2, wait=False)
    assert server.wait_exit(30) == ExitCode.APP_LOAD_ERROR, server.log()
    log = server.log()
    assert re.search(r"worker 0 \(pid \d+\) exited: signal 15 \(SIGTERM\)", log), log
    assert "SIGQUIT" not in log


def test_ttin_past_port_65535_is_refused_and_the_server_keeps_serving(tmp_path, mysql_params, database):
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 65535))
    except OSError:
        pytest.skip("port 65535 is taken here")
    server = Server(tmp_path, mysql_params, database, _plain(tmp_path), "--worker-ports", workers=1, port=65535)
    try:
        server.start()
        server.signal(signal.SIGTTIN)
        server.wait_log(r"TTIN: cannot add worker 1: .*65536", timeout=10)
        assert server.get("/")[0] == 200
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == ExitCode.OK, server.log()
    finally:
        server.stop()


LOOP_FAILURE_SCRIPT = """
import sys
from greenpool.launch import cli, master

maintain = master.Master.maintain

def failing_maintain(self):
    if self.started:
        raise RuntimeError("a bug in the master loop")
    maintain(self)

master.Master.maintain = failing_maintain
sys.exit(cli.main(sys.argv[1:]))
"""


def test_an_exception_in_the_master_loop_stops_the_workers_and_fails(tmp_path, mysql_params, database):
    (tmp_path / "loopfail.py").write_text(LOOP_FAILURE_SCRIPT)
    server = Server(tmp_path, mysql_params, database, _plain(tmp_path), workers=2)
    server.cmd[1:3] = ["loopfail.py"]  # instead of -m greenpool.launch
    server.start(wait=False)
    try:
        rc = server.wait_exit(30)
        log = server.log()
        assert rc == ExitCode.FAILURE, log
        assert "RuntimeError: a bug in the master loop" in log
        assert "exiting with 1 (FAILURE)" in log and "exiting with 0" not in log
        pids = [int(p) for p in re.findall(r"gevent worker \d-(\d+) ready", log)]
        assert len(pids) == 2
        for pid in pids:  # stopped by the master, not orphaned
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        server.stop()


def test_a_worker_that_cannot_be_started_is_retried_and_leaks_no_descriptor(tmp_path, monkeypatch):
    from greenpool.launch import config as config_module
    from greenpool.launch import master as master_module

    cfg = config_module.resolve({"control_dir": str(tmp_path / "ctl")}, environ={})
    m = master_module.Master(cfg)

    def no_popen(*args: Any, **kwargs: Any) -> None:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(master_module.subprocess, "Popen", no_popen)
    fds = len(os.listdir("/proc/self/fd"))
    assert m.spawn(0) is None
    assert len(os.listdir("/proc/self/fd")) == fds
    assert 0 not in m.current and m.respawn.scheduled(0) and not m.workers


def test_a_worker_whose_pipe_cannot_be_made_is_retried(tmp_path):
    # Out of descriptors before Popen: the worker's pipe is the first thing
    # spawn() opens. A real limit (RLIMIT_NOFILE), not a stand-in.
    from greenpool.launch import config as config_module
    from greenpool.launch import master as master_module
    from tests.support.fds import no_free_descriptor

    m = master_module.Master(config_module.resolve({"control_dir": str(tmp_path / "ctl")}, environ={}))
    with no_free_descriptor():
        started = m.spawn(0)
    if started is not None:  # the fix is missing: do not leave the worker running
        started.signal(signal.SIGKILL)
        started.proc.wait(timeout=10)
    assert started is None
    assert 0 not in m.current and m.respawn.scheduled(0) and not m.workers


def test_check_config_kills_a_worker_that_hangs_and_fails(tmp_path, monkeypatch, caplog):
    # An app import (or a database handshake) that never returns: --check-config
    # gives up after the boot limit, as run() does for a booting worker.
    from greenpool.launch import config as config_module
    from greenpool.launch import master as master_module

    (tmp_path / "hangapp.py").write_text("import time\ntime.sleep(120)\napp = None\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    m = master_module.Master(
        config_module.resolve({"app": "hangapp:app", "control_dir": str(tmp_path / "ctl")}, environ={})
    )
    m.boot_timeout = 1.0  # 60 s or more from the settings
    caplog.set_level(logging.ERROR, logger="greenpool.launch")
    started = time.monotonic()
    assert m.check() == ExitCode.WORKER_BOOT_ERROR
    assert time.monotonic() - started < 15
    message = next(r.getMessage() for r in caplog.records if "configuration check failed" in r.getMessage())
    pid = int(re.search(r"pid (\d+)", message).group(1))
    assert "was not done after 1s: killing it" in message
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_check_config_stopped_by_a_signal_kills_its_worker_first(tmp_path, stop):
    # `timeout 30 greenpool-serve --check-config` sends TERM to the master only;
    # a worker hanging in the app's import must not outlive it.
    (tmp_path / "hangapp.py").write_text(
        "import os, time\n"
        f"open({str(tmp_path / 'worker.pid')!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(120)\napp = None\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    master = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "greenpool.launch",
            "--check-config",
            "--control-dir",
            str(tmp_path / "ctl"),
            "hangapp:app",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pid_file = tmp_path / "worker.pid"
    worker_pid = None
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            assert master.poll() is None, master.stdout.read()
            time.sleep(0.05)
        worker_pid = int(pid_file.read_text())
        master.send_signal(stop)
        output, _ = master.communicate(timeout=15)
    finally:
        if master.poll() is None:
            master.kill()
            master.wait(timeout=10)
        if worker_pid is not None and pid_alive(worker_pid):  # the defect this test is for: do not leave it
            os.kill(worker_pid, signal.SIGKILL)
    assert master.returncode == 128 + stop, output
    assert f"configuration check stopped by {signal.Signals(stop).name}: killed its worker (pid {worker_pid})" in output
    assert not pid_alive(worker_pid)


class _FakeProc:
    def __init__(self, pid: int) -> None:
        self.pid = pid


def _worker(master_module: Any, index: int, state: str, replaces: Any = None) -> Any:
    w = master_module.WorkerProc(index, 1, _FakeProc(10**7 + index), -1, None, [], replaces)
    w.state = master_module.WorkerPhase(state)
    w.sent = []
    w.signal = w.sent.append
    return w


@pytest.mark.parametrize("master_stopping", [False, True])
def test_ready_from_a_worker_being_stopped_keeps_it_stopping(tmp_path, master_stopping):
    from greenpool.launch import config as config_module
    from greenpool.launch import master as master_module

    m = master_module.Master(config_module.resolve({"control_dir": str(tmp_path / "ctl")}, environ={}))
    old = _worker(master_module, 0, "ready")
    new = _worker(master_module, 0, "stopping", replaces=old)  # stopped while it booted (TTOU, quick stop)
    new.stop_deadline = deadline = time.monotonic() + 3.0
    m.current[0] = old
    m.replacement = new
    m.stopping = master_stopping
    m.on_ready(new)
    assert new.state == master_module.WorkerPhase.STOPPING and new.stop_deadline == deadline
    assert m.current[0] is old and old.state == master_module.WorkerPhase.READY and old.sent == []


DRAIN_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import os, socket, sys
import gevent
from greenpool.launch import config, worker, worker_gevent

listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
port = listener.getsockname()[1]
spec = {"index": 0, "generation": 1, "listen": [{"fd": listener.detach(), "address": f"127.0.0.1:{port}"}],
        "listen_names": [], "control_path": None, "settings": config.resolve({}, environ={}).to_json()}
state = worker.WorkerState(spec)

def app(environ, start_response):
    gevent.sleep(0.3)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served"]

gw = worker_gevent.GeventWorker(state)
gw.start(app)
server = gw.servers[0]
do_handle = server.do_handle

def stop_then_handle(*args):
    gw.request_stop(True)  # a TERM handled in the same hub turn as this accept
    do_handle(*args)

server.do_handle = stop_then_handle
print(port, flush=True)
gw.done.wait()
os._exit(0)  # as worker_gevent.main does
"""


def test_gevent_drain_serves_a_connection_accepted_in_the_same_turn_as_the_stop(tmp_path):
    script = tmp_path / "drain.py"
    script.write_text(DRAIN_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"served"), answer
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        print(proc.stderr.read())


def test_a_worker_asks_again_for_a_replacement_after_a_failed_one(serve, tmp_path):
    # --max-requests: the replacement fails to boot, which ends that rolling restart;
    # the worker repeats its request, and once the app boots again it is replaced.
    (tmp_path / "flaky.py").write_text(
        "import os\n"
        "if os.path.exists('broken'):\n"
        "    raise ImportError('broken on purpose')\n"
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n"
    )
    server = serve("flaky:app", "--max-requests", "3", workers=1)
    (tmp_path / "broken").write_text("")
    for _ in range(3):
        assert server.get("/")[0] == 200
    server.wait_log(r"the rolling restart stops here", timeout=15)
    (tmp_path / "broken").unlink()
    server.wait_log(r"worker 0 replaced", timeout=9)


def test_db_boot_timeout_is_one_deadline_for_every_database(serve, tmp_path):
    dead = free_port()
    (tmp_path / "manydbs.py").write_text(
        "from greenpool.demo.settings import *\n"
        f"DATABASES['default']['PORT'] = {dead}\n"
        "for alias in ('a1', 'a2', 'a3'):\n"
        "    DATABASES[alias] = dict(DATABASES['default'])\n"
    )
    server = serve("--db-boot-timeout", "1", workers=1, env={"DJANGO_SETTINGS_MODULE": "manydbs"})
    stamps = [_utc_seconds(t) for t in re.findall(r"^\[(\S+)\] .* unavailable at boot", server.log(), re.M)]
    assert len(stamps) == 4, server.log()
    # Each alias had its own 1 s before: 3 s from the first warning to the last.
    assert stamps[-1] - stamps[0] < 1.5, server.log()


def test_demo_preparation_that_hangs_is_one_clear_error(tmp_path, mysql_params, database):
    (tmp_path / "shortprepare.py").write_text(
        "import sys\n"
        "from greenpool.launch import cli, master\n"
        "master._DEMO_PREPARE_TIMEOUT = 0.01  # as if migrate hung for 300 s\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    server = Server(tmp_path, mysql_params, database, workers=1)
    server.cmd[1:3] = ["shortprepare.py"]
    server.start(wait=False)
    try:
        assert server.wait_exit(30) == ExitCode.DATABASE_UNAVAILABLE, server.log()
        log = server.log()
        assert "preparing the demo database (migrate and seed) did not finish within 0.01s" in log
        assert "Traceback" not in log
    finally:
        server.stop()

"""greenpool-serve behind a real nginx, with the configuration that
`greenpool-serve nginx-config` renders: spread, failures, rolling restarts,
client addresses and keep-alive, as the deployment users run.

Each test starts its own greenpool-serve (demo site, a database of its own,
--worker-ports) and its own nginx from a prefix under tmp_path, on free
unprivileged ports of 127.0.0.1; every load is bounded in count and time and
scales with GREENPOOL_LOAD_SCALE ("ci" = small).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import signal
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port
from tests.support.nginx import Nginx, render, wait_until
from tests.test_launch_serve import Server, database, free_port_range, load_scale, loadgen  # noqa: F401  (database: a fixture)

pytestmark = [pytest.mark.mysql, pytest.mark.nginx]


class Stack:
    """greenpool-serve with one port per worker, and nginx in front of it."""

    def __init__(
        self,
        tmp_path: Path,
        mysql_params: dict,
        db_name: str,
        *,
        server: str = "gevent",
        workers: int = 2,
        serve_args: tuple[str, ...] = (),
        nginx_args: tuple[str, ...] = (),
    ) -> None:
        self.app_port = free_port_range(workers)
        self.port = free_port()
        self.app_log = tmp_path / f"access-{uuid.uuid4().hex[:6]}.log"
        self.app = Server(
            tmp_path,
            mysql_params,
            db_name,
            "--worker-ports",
            "--access-logfile",
            str(self.app_log),
            *serve_args,
            server=server,
            workers=workers,
            port=self.app_port,
        )
        # nginx-config checks its keepalive_timeout against the workers' --keep-alive.
        keep_alive = serve_args[serve_args.index("--keep-alive") :][:2] if "--keep-alive" in serve_args else ()
        conf = render(
            "-w",
            str(workers),
            "--worker-ports",
            "-b",
            f"127.0.0.1:{self.app_port}",
            "--listen",
            f"127.0.0.1:{self.port}",
            *keep_alive,
            *nginx_args,
        )
        self.nginx = Nginx(tmp_path / f"nginx-{uuid.uuid4().hex[:6]}", conf)

    def start(self) -> Stack:
        self.app.start()
        self.nginx.start(self.port)
        return self

    def stop(self) -> None:
        self.nginx.stop()
        self.app.stop()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        source: str | None = None,
        port: int | None = None,
        timeout: float = 30.0,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", port or self.port, timeout=timeout, source_address=(source, 0) if source else None
        )
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def app_access_log(self) -> str:
        return self.app_log.read_text(errors="replace") if self.app_log.exists() else ""

    def in_flight(self) -> dict[int, int]:
        """worker pid -> requests in flight, from the workers' stats."""
        return {w["worker"]["pid"]: w["requests"]["in_flight"] for w in self.app.stats()["workers"] if "requests" in w}


@pytest.fixture
def stack(tmp_path, mysql_params, database):  # noqa: F811
    started: list[Stack] = []

    def make(**kwargs: Any) -> Stack:
        s = Stack(tmp_path, mysql_params, database, **kwargs)
        started.append(s)
        return s.start()

    yield make
    for s in started:
        s.stop()


def _summary(result: dict[str, Any]) -> str:
    return json.dumps({k: result[k] for k in ("ok", "failed", "statuses", "errors", "retried", "rps", "workers")})


# -- spreading -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gevent", "tornado"])
def test_requests_spread_over_all_workers(stack, kind):
    s = stack(server=kind, workers=2)
    requests = max(300, int(1000 * load_scale()))
    result = loadgen([s.url("/read")], 20, requests, 60)
    print(f"{kind} through nginx:", _summary(result))
    assert result["failed"] == 0 and result["ok"] == requests, result
    pids = s.app.worker_pids()
    assert {int(w.split("-")[1]) for w in result["workers"]} == set(pids.values())
    for worker, count in result["workers"].items():
        assert count >= 0.25 * requests, f"least_conn gave {worker} only {count} of {requests}: {result['workers']}"
    # Each worker answered on its own port: the upstream address nginx logged is port + index.
    entries = s.nginx.access_entries()
    assert len(entries) >= requests
    for entry in entries[-50:]:
        index = int(entry["worker"].split("-")[0])
        assert entry["upstream"] == f"127.0.0.1:{s.app_port + index}", entry


# -- a worker killed -------------------------------------------------------------------


def test_worker_killed_mid_load_costs_no_failed_get(stack):
    s = stack(workers=2)
    before = s.app.worker_pids()
    duration = max(5.0, 10 * load_scale())
    with ThreadPoolExecutor(2) as pool:
        reads = pool.submit(loadgen, [s.url("/read")], 30, 10**6, duration)
        # Slow requests, so that some are in flight on the worker when it dies.
        slow = pool.submit(loadgen, [s.url("/slow?s=0.5")], 6, 10**6, duration)
        time.sleep(duration / 3)
        os.kill(before[1], signal.SIGKILL)
        reads, slow = reads.result(timeout=duration + 120), slow.result(timeout=duration + 120)
    print("SIGKILL under load: /read", _summary(reads), "/slow", _summary(slow))
    assert reads["failed"] == 0 and slow["failed"] == 0, (reads, slow)
    assert reads["ok"] > 200 and slow["ok"] > 10
    s.app.wait_log("died unexpectedly \\(exit signal 9 \\(SIGKILL\\)\\)")
    wait_until(lambda: len(s.app.worker_pids()) == 2 and s.app.worker_pids()[1] != before[1], 30, "worker 1 replaced")
    entries = s.nginx.access_entries()
    passed_on = [e for e in entries if "," in e["upstream"]]
    print(f"nginx passed {len(passed_on)} request(s) on to the other worker, e.g. {passed_on[:2]}")
    assert passed_on, "no request was in flight on the killed worker"
    assert all(e["status"] == "200" for e in entries), [e for e in entries if e["status"] != "200"][:5]


def _wait_in_flight(s: Stack, pids: set[int], timeout: float = 5.0) -> int:
    """The pid of the worker that has a request in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [pid for pid, n in s.in_flight().items() if n > 0 and pid in pids]
        if busy:
            return busy[0]
        time.sleep(0.02)
    raise AssertionError("no request in flight")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_request_in_flight_on_a_killed_worker_is_passed_on_only_if_idempotent(stack, method):
    """A GET whose worker dies is passed to the other worker (and answered); a POST that
    was already sent is not replayed (it may have run): the client gets 502."""
    s = stack(workers=2)
    pids = set(s.app.worker_pids().values())
    tag = f"{method.lower()}-{uuid.uuid4().hex[:8]}"
    path = f"/slow?s=2&tag={tag}"
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(s.request, method, path, body=b"x=1" if method == "POST" else None)
        victim = _wait_in_flight(s, pids)
        os.kill(victim, signal.SIGKILL)
        status, headers, _ = future.result(timeout=30)
    survivor = (pids - {victim}).pop()
    time.sleep(2.5)  # a replay would have finished by now
    served = re.findall(rf'"{method} {re.escape(path)} HTTP/1.\d" (\d+) .* (\d+)-(\d+)$', s.app_access_log(), re.M)
    entry = [e for e in s.nginx.access_entries() if tag in e["request"]]
    print(
        f"{method} in flight on killed worker {victim}: client got {status}; workers that served it: {served}; "
        f"nginx: {entry}"
    )
    if method == "GET":
        assert status == 200 and headers["x-greenpool-worker"].endswith(f"-{survivor}")
        assert [int(pid) for _, _, pid in served] == [survivor]
        assert entry[0]["upstream"].count(",") == 1  # tried the killed worker, then the other
    else:
        assert status == 502
        assert served == [], "nginx replayed a POST that had been sent to a worker that died"
        assert "," not in entry[0]["upstream"]


# -- rolling restart ---------------------------------------------------------------------


class PostClient(threading.Thread):
    """Sends POSTs through nginx back to back until stopped (bounded by a deadline):
    a POST is what a keep-alive race or a lost request would fail, since nginx never
    passes one on after it was sent."""

    def __init__(self, s: Stack, path: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.s, self.path, self.deadline = s, path, deadline
        self.statuses: dict[int, int] = {}
        self.errors: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.s.port, timeout=30)
        while not self.stopped.is_set() and time.monotonic() < self.deadline:
            try:
                conn.request(
                    "POST", self.path, body=b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
                )
                resp = conn.getresponse()
                resp.read()
                self.statuses[resp.status] = self.statuses.get(resp.status, 0) + 1
            except (OSError, http.client.HTTPException) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.s.port, timeout=30)
        conn.close()


@pytest.mark.parametrize("kind", ["gevent", "tornado"])
def test_rolling_restart_under_load_through_nginx_fails_no_request(stack, kind):
    s = stack(server=kind, workers=2)
    before = set(s.app.worker_pids().values())
    duration = max(8.0, 14 * load_scale())
    posters = [PostClient(s, "/hello", time.monotonic() + duration + 30) for _ in range(4)]
    for p in posters:
        p.start()
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(loadgen, [s.url("/read"), s.url("/tx"), s.url("/hello")], 40, 10**6, duration)
        time.sleep(1.5)
        s.app.signal(signal.SIGHUP)
        s.app.wait_log(r"worker \d replaced", count=2, timeout=60)
        result = future.result(timeout=duration + 120)
    for p in posters:
        p.stopped.set()
        p.join(35)
    posts = {"statuses": {}, "errors": []}
    for p in posters:
        for status, n in p.statuses.items():
            posts["statuses"][status] = posts["statuses"].get(status, 0) + n
        posts["errors"] += p.errors
    passed_on = [e for e in s.nginx.access_entries() if "," in e["upstream"]]
    races = s.nginx.error_log().count("upstream prematurely closed")
    print(
        f"HUP through nginx ({kind}): GET",
        _summary(result),
        "POST",
        posts,
        f"nginx passed {len(passed_on)} on; {races} keep-alive race(s) in nginx's error log",
    )
    assert result["failed"] == 0 and result["retried"] == 0, result
    assert result["ok"] > 500
    assert set(posts["statuses"]) == {200} and not posts["errors"], posts
    after = set(s.app.worker_pids().values())
    assert not before & after and len(after) == 2
    seen = {int(w.split("-")[1]) for w in result["workers"]}
    assert before <= seen and after & seen


# -- the client address the application sees ------------------------------------------------


def _whoami(s: Stack, **kwargs: Any) -> dict[str, Any]:
    status, _, body = s.request("GET", "/whoami", **kwargs)
    assert status == 200, body
    return json.loads(body)


SPOOF = {"X-Forwarded-For": "203.0.113.66", "X-Real-IP": "203.0.113.66", "X-Forwarded-Proto": "https"}


def test_app_sees_the_real_client_address_through_a_trusted_proxy(stack):
    # nginx connects from 127.0.0.1, which the default --forwarded-allow-ips trusts.
    s = stack(workers=1)
    # The client is 127.0.0.2 (any 127/8 address is this machine), and it lies in its headers:
    # nginx replaces X-Real-IP and X-Forwarded-Proto, and appends the real address to X-Forwarded-For.
    who = _whoami(s, source="127.0.0.2", headers=SPOOF)
    assert who["remote_addr"] == "127.0.0.2" and who["scheme"] == "http", who
    # Straight to the worker from an untrusted peer, the same headers are ignored.
    who = _whoami(s, source="127.0.0.2", headers=SPOOF, port=s.app_port)
    assert who["remote_addr"] == "127.0.0.2" and who["scheme"] == "http", who
    # (A process on 127.0.0.1 is trusted by default: it is where nginx runs.)
    assert _whoami(s, headers={"X-Real-IP": "203.0.113.66"}, port=s.app_port)["remote_addr"] == "203.0.113.66"


def test_app_ignores_forwarded_headers_from_a_proxy_it_does_not_trust(stack):
    s = stack(workers=1, serve_args=("--forwarded-allow-ips", "198.51.100.1"))
    who = _whoami(s, source="127.0.0.2", headers=SPOOF)
    assert who["remote_addr"] == "127.0.0.1", who  # nginx's own address: its headers are not believed
    assert who["scheme"] == "http"


# -- keep-alive races ------------------------------------------------------------------------


@pytest.mark.load
def test_no_502_from_keep_alive_races_over_a_sustained_run(stack):
    """Bursts with idle gaps around both keep-alive timeouts, scaled down (nginx closes
    idle upstream connections after 1.5 s, the workers after 2 s: the same order as the
    defaults, 60 s and 75 s), with GETs and POSTs. No request may fail and nginx may
    never find a worker's connection closed under it."""
    s = stack(workers=2, serve_args=("--keep-alive", "2"), nginx_args=("--upstream-keepalive-timeout", "1.5"))
    duration = max(10.0, 30 * load_scale())
    deadline = time.monotonic() + duration
    statuses: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        rounds = 0
        while time.monotonic() < deadline and rounds < 1000:
            rounds += 1
            for _ in range(rng.randint(1, 6)):
                method, path = rng.choice([("GET", "/read"), ("POST", "/hello"), ("GET", "/hello"), ("POST", "/tx")])
                try:
                    status = s.request(method, path, body=b"a=1" if method == "POST" else None, timeout=20)[0]
                except OSError as exc:
                    with lock:
                        errors.append(f"{method} {path}: {exc}")
                    continue
                with lock:
                    statuses[f"{method} {status}"] = statuses.get(f"{method} {status}", 0) + 1
            time.sleep(rng.uniform(1.0, 2.6))  # idle: nginx's 1.5 s and the workers' 2 s both fall in here

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    errors_log = s.nginx.error_log()
    print(f"sustained keep-alive run, {duration:.0f}s: {statuses}, errors {errors[:3]}")
    assert not errors, errors[:5]
    assert statuses and all(key.endswith(" 200") for key in statuses), statuses
    assert sum(statuses.values()) > 50
    for symptom in ("upstream prematurely closed", "reset by peer", "no live upstreams"):
        assert symptom not in errors_log, errors_log[-2000:]

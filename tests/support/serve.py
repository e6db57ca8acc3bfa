"""greenpool-serve as a real process, for tests that run it against any MySQL server
(the shared one or a throwaway mariadbd), and load clients that record what happened.

* ``ServeProcess``: one master and its workers, started as users start it, in a
  session of its own so that stop() can kill exactly what it started.
* ``TimedLoad``: a few client threads sending requests back to back and recording
  each one (start, end, status, worker, error), so a test can ask "did every request
  that started after time T succeed?".
* ``loadgen()``: greenpool.launch.loadgen in its own process, for many requests.

Every wait is bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from greenpool.launch import stats as stats_module
from tests.support.net import free_port
from tests.support.procs import stop_process_group

READY_TIMEOUT = 60.0


def load_scale() -> str:
    """GREENPOOL_LOAD_SCALE: "ci" for the bounded form CI runs, "" for the full one."""
    return os.environ.get("GREENPOOL_LOAD_SCALE", "").strip().lower()


def scaled(full: Any, ci: Any) -> Any:
    """``ci`` when GREENPOOL_LOAD_SCALE=ci, else ``full``."""
    return ci if load_scale() == "ci" else full


class ServeProcess:
    """One greenpool-serve master (and its workers) serving the demo site (or APP)."""

    def __init__(
        self,
        workdir: Path,
        db: dict[str, Any],
        *args: str,
        server: str = "gevent",
        workers: int = 2,
        env: dict[str, str] | None = None,
        port: int | None = None,
        bind: list[str] | None = None,
        wrapper: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        tag = uuid.uuid4().hex[:6]
        self.control_dir = str(workdir / f"ctl-{tag}")
        self.log_path = workdir / f"serve-{server}-{tag}.log"
        self.workers = workers
        self.server = server
        binds = bind or [f"127.0.0.1:{self.port}"]
        self.cmd = [
            *(wrapper or []),
            sys.executable,
            "-m",
            "greenpool.launch",
            "--server",
            server,
            "-w",
            str(workers),
            "--control-dir",
            self.control_dir,
            *[f"--bind={b}" for b in binds],
            *args,
        ]
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("GREENPOOL_") and k != "DJANGO_SETTINGS_MODULE"
        }
        self.env.update(
            {
                "GREENPOOL_MYSQL_HOST": str(db["host"]),
                "GREENPOOL_MYSQL_PORT": str(db["port"]),
                "GREENPOOL_MYSQL_USER": str(db["user"]),
                "GREENPOOL_MYSQL_PASSWORD": str(db["password"]),
                "GREENPOOL_MYSQL_DATABASE": str(db["database"]),
            }
        )
        self.env.update(env or {})
        self.cwd = workdir
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    # -- life cycle ------------------------------------------------------------------

    def start(self, wait: bool = True, timeout: float = READY_TIMEOUT) -> ServeProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if wait:
            self.wait_log(f"all {self.workers} workers ready", timeout=timeout)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = READY_TIMEOUT, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.log())) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"greenpool-serve exited ({self.proc.returncode}) before {pattern!r}:\n{self.log()[-6000:]}"
                )
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the log after {timeout}s:\n{self.log()[-6000:]}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"greenpool-serve still running after {timeout}s:\n{self.log()[-6000:]}") from None

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signum)

    def group_alive(self) -> bool:
        """True while any process of the session this test started is alive."""
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # pragma: no cover - we started it, as ourselves
            return True
        return True

    def stop(self) -> None:
        """TERM, then (if it hangs) KILL the process group this test started."""
        if self.proc is None:
            return
        try:
            stop_process_group(self.proc, signal.SIGTERM, grace=30)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    # -- looking inside -----------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        return stats_module.collect(self.control_dir)

    def worker_pids(self) -> dict[int, int]:
        return {w["index"]: w["pid"] for w in self.stats()["workers"] if w.get("state") == "ready"}

    def pool_stats(self) -> dict[int, dict[str, int]]:
        """Worker index -> the demo pool's get_stats()."""
        return {w["index"]: w["pools"].get("default", {}) for w in self.stats()["workers"] if "pools" in w}

    def wait_workers(self, count: int, timeout: float = 30.0, exclude: set[int] = frozenset()) -> dict[int, int]:
        """Wait until ``count`` workers are ready and none of them has a pid in ``exclude``."""
        deadline = time.monotonic() + timeout
        pids: dict[int, int] = {}
        while time.monotonic() < deadline:
            try:
                pids = self.worker_pids()
            except Exception:  # master.json being rewritten
                pids = {}
            if len(pids) == count and not set(pids.values()) & set(exclude):
                return pids
            time.sleep(0.1)
        raise AssertionError(f"workers not ready after {timeout}s: {pids}\n{self.log()[-6000:]}")

    def url(self, path: str, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.port}{path}"

    def get(
        self,
        path: str,
        headers: dict[str, str] | None = None,
        port: int | None = None,
        timeout: float = 30.0,
        source: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", port or self.port, timeout=timeout, source_address=(source, 0) if source else None
        )
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get_json(self, path: str, **kwargs: Any) -> Any:
        status, _, body = self.get(path, **kwargs)
        assert status == 200, (path, status, body[:2000])
        return json.loads(body)

    def timed_get(self, path: str, **kwargs: Any) -> tuple[float, int, dict[str, str], bytes]:
        started = time.monotonic()
        status, headers, body = self.get(path, **kwargs)
        return time.monotonic() - started, status, headers, body


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``greenpool-serve ARGS`` (python -m greenpool.launch), captured."""
    return subprocess.run(
        [sys.executable, "-m", "greenpool.launch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def loadgen(
    urls: list[str], clients: int, requests: int, duration: float, *extra: str, timeout: float = 30.0
) -> dict[str, Any]:
    """The gevent load client in its own process, bounded in count and time."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "greenpool.launch.loadgen",
            *urls,
            "--clients",
            str(clients),
            "--requests",
            str(requests),
            "--duration",
            str(duration),
            "--timeout",
            str(timeout),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=duration + timeout + 60,
    )
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout)


# -- a load that remembers every request ----------------------------------------------------


@dataclass
class Sample:
    client: int
    path: str
    started: float  # time.monotonic() of this (the test's) process
    ended: float
    status: int | None  # None: no HTTP answer (see error)
    worker: str | None
    error: str | None
    body: bytes

    @property
    def ok(self) -> bool:
        return self.status == 200

    def describe(self, origin: float) -> str:
        what = self.status if self.status is not None else self.error
        return (
            f"client {self.client} {self.path} {self.started - origin:+.3f}s..{self.ended - origin:+.3f}s -> {what} "
            f"{self.body[:160]!r}"
        )


class TimedLoad:
    """``clients`` threads, each on its own keep-alive connection, sending requests back
    to back (path i mod len(paths)) until stop(), ``duration`` or ``max_requests``."""

    def __init__(
        self,
        port: int,
        paths: list[str],
        clients: int,
        duration: float,
        max_requests: int = 1_000_000,
        timeout: float = 30.0,
        pause: float = 0.0,
    ) -> None:
        self.port = port
        self.paths = paths
        self.clients = clients
        self.duration = duration
        self.max_requests = max_requests
        self.timeout = timeout
        self.pause = pause
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0

    def __enter__(self) -> TimedLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        # The block is what runs *during* the load: let the load run its course
        # (duration or max_requests), then collect it with stop().
        if exc[0] is None:
            self.wait()
        self.stop()

    def wait(self) -> None:
        """Wait until every client ended by itself (duration or max_requests), bounded."""
        deadline = self.started_at + self.duration + self.timeout + 5
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def start(self) -> TimedLoad:
        self.started_at = time.monotonic()
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, args=(i,), name=f"timed-load-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()
        return self

    def stop(self, timeout: float | None = None) -> list[Sample]:
        self._stop.set()
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout + 5)
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise AssertionError(f"load client threads still running: {alive}")
        with self._lock:
            return sorted(self.samples, key=lambda s: s.started)

    def _client(self, i: int) -> None:
        path = self.paths[i % len(self.paths)]
        deadline = self.started_at + self.duration
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            with self._lock:
                if len(self.samples) >= self.max_requests:
                    break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            t0 = time.monotonic()
            status = worker = error = None
            body = b""
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                status, worker = resp.status, resp.getheader("X-Greenpool-Worker")
                if (resp.getheader("Connection") or "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                error = f"{type(exc).__name__}: {exc}"
                conn.close()
                conn = None
            sample = Sample(i, path, t0, time.monotonic(), status, worker, error, body)
            with self._lock:
                self.samples.append(sample)
            if self.pause:
                time.sleep(self.pause)
        if conn is not None:
            conn.close()


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (VmRSS from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")

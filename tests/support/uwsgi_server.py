"""The real uwsgi binary serving tests/support/uwsgi_app.py, and a watcher of its server
connections, for tests/test_uwsgi.py.

* ``UwsgiProcess``: ``uwsgi --http-socket --master --processes N --gevent M`` in a session
  of its own (stop() ends exactly what it started), logging to a file.
* ``ConnectionWatch``: a thread reading information_schema.PROCESSLIST for one database
  every few milliseconds, keeping the ids of every reading.

Every wait is bounded.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.support import mysqlenv
from tests.support.net import free_port
from tests.support.procs import stop_process_group

ROOT = Path(__file__).resolve().parent.parent.parent
READY_TIMEOUT = 60.0
#: tests/djproject/settings.py: OPTIONS["pool"]["max_size"].
DJPROJECT_MAX_SIZE = 4


def uwsgi_binary() -> str | None:
    """The uwsgi next to this interpreter (setup.cfg's test extra installs it), else on PATH."""
    beside = Path(sys.executable).parent / "uwsgi"
    if beside.exists():
        return str(beside)
    return shutil.which("uwsgi")


class UwsgiProcess:
    """One uWSGI master and its workers serving the test project with the ENGINE swap."""

    def __init__(
        self,
        workdir: Path,
        db: dict[str, Any],
        database: str,
        *args: str,
        processes: int = 2,
        cores: int = 100,
        early_patch: bool = True,
        query_at_load: bool = True,
    ) -> None:
        binary = uwsgi_binary()
        if binary is None:
            raise AssertionError("no uwsgi binary: `pip install -e '.[test]'` (setup.cfg's test extra) builds it")
        self.port = free_port()
        self.processes = processes
        self.record_dir = workdir / f"record-{self.port}"
        self.record_dir.mkdir()
        self.log_path = workdir / f"uwsgi-{self.port}.log"
        self.reload_file = workdir / f"reload-{self.port}"
        self.reload_file.touch()
        patch_flag = "--gevent-early-monkey-patch" if early_patch else "--gevent-monkey-patch"
        self.cmd = [
            binary,
            "--http-socket",
            f"127.0.0.1:{self.port}",
            "--master",
            "--processes",
            str(processes),
            "--gevent",
            str(cores),
            patch_flag,
            "--home",
            sys.prefix,
            "--chdir",
            str(ROOT),
            "--module",
            "tests.support.uwsgi_app:application",
            "--need-app",
            "--listen",
            "1024",
            "--touch-reload",
            str(self.reload_file),
            "--worker-reload-mercy",
            "20",
            "--reload-mercy",
            "20",
            "--disable-logging",
            *args,
        ]
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("GREENPOOL_", "UWSGI_")) and k != "DJANGO_SETTINGS_MODULE"
        }
        self.env.update(
            {
                "DJANGO_SETTINGS_MODULE": "tests.djproject.settings",
                "GREENPOOL_DJPROJECT_DB": database,
                "GREENPOOL_MYSQL_HOST": str(db["host"]),
                "GREENPOOL_MYSQL_PORT": str(db["port"]),
                "GREENPOOL_MYSQL_USER": str(db["user"]),
                "GREENPOOL_MYSQL_PASSWORD": str(db["password"]),
                "GREENPOOL_UWSGI_RECORD_DIR": str(self.record_dir),
                "GREENPOOL_UWSGI_QUERY_AT_LOAD": "1" if query_at_load else "",
                "PYTHONPATH": str(ROOT),
            }
        )
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    def start(self, timeout: float = READY_TIMEOUT) -> UwsgiProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.wait_log(r"spawned uWSGI worker", count=self.processes, timeout=timeout)
        self.wait_answering(timeout)
        return self

    def stop(self) -> None:
        """SIGINT (uWSGI's immediate shutdown), then SIGKILL to the session if it hangs."""
        if self.proc is None:
            return
        try:
            stop_process_group(self.proc, signal.SIGINT, grace=20)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> UwsgiProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- looking at it ----------------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, count: int = 1, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.log())) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"uwsgi exited ({self.proc.returncode}) before {count} x {pattern!r}:\n{self.log()[-6000:]}"
                )
            time.sleep(0.05)
        raise AssertionError(f"fewer than {count} x {pattern!r} in uwsgi's log after {timeout}s:\n{self.log()[-6000:]}")

    def get(self, path: str, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def wait_answering(self, timeout: float = READY_TIMEOUT) -> None:
        """Until a worker answers HTTP (any status: the wrong-patch case answers 500)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                self.get("/conn", timeout=5)
                return
            except (OSError, http.client.HTTPException) as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(
            f"uwsgi did not answer on 127.0.0.1:{self.port} within {timeout}s ({last}):\n{self.log()[-6000:]}"
        )

    def reload(self) -> None:
        """A graceful reload, as a deploy does it: touch the --touch-reload file."""
        os.utime(self.reload_file)

    def _ids(self, prefix: str) -> dict[int, set[int]]:
        out: dict[int, set[int]] = {}
        for path in self.record_dir.glob(f"{prefix}-*"):
            pid = int(path.name.split("-", 1)[1])
            out[pid] = {int(line) for line in path.read_text().split()}
        return out

    def used_ids(self) -> dict[int, set[int]]:
        """pid -> the server connection ids its requests used."""
        return self._ids("used")

    def loaded_ids(self) -> dict[int, set[int]]:
        """pid -> the id of the connection the module opened while it was imported there."""
        return self._ids("loaded")


class ConnectionWatch:
    """Counts the server connections to ``database`` (PROCESSLIST) until stopped."""

    def __init__(self, db: dict[str, Any], database: str, interval: float = 0.02, limit: float = 300.0) -> None:
        self.db = db
        self.database = database
        self.interval = interval
        self.limit = limit
        self.snapshots: list[set[int]] = []
        self.error: Exception | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="processlist-watch", daemon=True)

    def _read(self, conn: Any) -> set[int]:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s AND ID <> CONNECTION_ID()",
                (self.database,),
            )
            return {row[0] for row in cur.fetchall()}

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        try:
            conn = mysqlenv.connect(self.db)
            try:
                while not self._stop.is_set() and time.monotonic() < deadline:
                    self.snapshots.append(self._read(conn))
                    self._stop.wait(self.interval)
            finally:
                conn.close()
        except Exception as exc:  # reported by stop(), in the test's thread
            self.error = exc

    def __enter__(self) -> ConnectionWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def most(self, excluding: set[int] = frozenset()) -> int:
        """The most connections open at once, not counting the ids in ``excluding``."""
        return max((len(ids - excluding) for ids in self.snapshots), default=0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        if self._thread.is_alive():
            raise AssertionError("the PROCESSLIST watch did not stop within 10 s")
        if self.error is not None:
            raise AssertionError(f"reading PROCESSLIST for {self.database!r} failed: {self.error}") from self.error

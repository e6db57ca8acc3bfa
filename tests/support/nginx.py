"""A real nginx for the tests: started from a prefix under the test's tmp_path with
the configuration `greenpool-serve nginx-config --standalone` renders, stopped by
its pid. Nothing outside the prefix is read or written (no system config, logs
or temporary directories), and it listens on an unprivileged port.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from greenpool.launch import nginx as nginx_module
from tests.support.net import wait_for_port
from tests.support.procs import stop_process_group


def nginx_binary() -> str:
    """The nginx binary, or skip (fail in CI, where `make test` installs it)."""
    path = nginx_module.find_nginx()
    if path is None:
        message = "nginx is not installed (apt-get install nginx; make test installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def render(*args: str, standalone: bool = True) -> str:
    """`greenpool-serve nginx-config ARGS` in-process, with no GREENPOOL_* environment."""
    config, _ = nginx_module.resolve(list(args), environ={})
    return nginx_module.render(config, standalone=standalone)


class Nginx:
    """One nginx master (and its worker processes) that this test started."""

    def __init__(self, prefix: Path, conf_text: str, *, wrap: list[str] | None = None) -> None:
        self.binary = nginx_binary()
        self.prefix = nginx_module.prepare_prefix(prefix)
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(conf_text)
        self.wrap = list(wrap or [])  # e.g. ["ip", "netns", "exec", NS]
        self.proc: subprocess.Popen | None = None
        self._out = None

    def check(self) -> str:
        """`nginx -t`; returns its output, fails the test with it when the config is refused."""
        proc = subprocess.run(
            self.wrap + nginx_module.nginx_command(self.binary, self.prefix, self.conf, "-t"),
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        output = (proc.stdout + proc.stderr).strip()
        assert proc.returncode == 0, f"nginx -t refused {self.conf}:\n{output}\n--- config ---\n{self.conf.read_text()}"
        return output

    def start(self, port: int | None = None) -> Nginx:
        self.check()
        self._out = open(self.prefix / "logs" / "stdout.log", "wb")
        cmd = self.wrap + nginx_module.nginx_command(self.binary, self.prefix, self.conf, "-g", "daemon off;")
        self.proc = subprocess.Popen(
            cmd, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        if port is not None and not self.wrap:
            try:
                wait_for_port("127.0.0.1", port, timeout=15)
            except TimeoutError:
                raise AssertionError(f"nginx did not listen on {port}:\n{self.error_log()}") from None
        return self

    def error_log(self) -> str:
        path = self.prefix / "logs" / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> list[str]:
        path = self.prefix / "logs" / "access.log"
        return path.read_text(errors="replace").splitlines() if path.exists() else []

    def access_entries(self) -> list[dict[str, str]]:
        """The access log in the `greenpool` format, one dict per request."""
        entries = []
        for line in self.access_log():
            match = re.search(
                r'"(?P<request>[^"]*)" (?P<status>\d+) .* upstream=(?P<upstream>.*?) '
                r"upstream_status=(?P<upstream_status>.*?) upstream_time=.* worker=(?P<worker>\S*)$",
                line,
            )
            if match:
                entries.append(match.groupdict())
        return entries

    def stop(self) -> None:
        """QUIT (graceful) to the master we started, then KILL its process group."""
        if self.proc is None:
            return
        stop_process_group(self.proc, signal.SIGQUIT, grace=15)
        if self._out is not None:
            self._out.close()
        self.proc = None


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout}s")

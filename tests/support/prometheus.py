"""A real Prometheus server (Debian's `prometheus` package) for tests: its own
config and data directory under the test's tmp dir, a free port on 127.0.0.1,
scraping the given targets every second. Queries go through its HTTP API."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port
from tests.support.procs import stop_process_group

SCRAPE_INTERVAL = "1s"


def binary_or_skip() -> str:
    """The prometheus binary; a failure in CI (the bootstrap installs it), a skip elsewhere."""
    import os

    path = shutil.which("prometheus")
    if path is None:
        message = "no prometheus binary: the bootstrap's tools step installs Debian's prometheus package"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


class Prometheus:
    def __init__(self, workdir: Path, targets: list[str], job: str = "greenpool") -> None:
        self.binary = binary_or_skip()
        self.port = free_port()
        self.dir = workdir / f"prometheus-{self.port}"
        self.dir.mkdir()
        self.config = self.dir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed.
        self.config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
                    "scrape_configs": [
                        {
                            "job_name": job,
                            "scrape_interval": SCRAPE_INTERVAL,
                            "scrape_timeout": SCRAPE_INTERVAL,
                            "static_configs": [{"targets": targets}],
                        }
                    ],
                }
            )
        )
        self.log_path = self.dir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> Prometheus:
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited ({self.proc.returncode}):\n{self.log()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready on port {self.port} after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, signal.SIGTERM, grace=10)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one element) of ``promql`` now."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as resp:
            answer = json.loads(resp.read())
        assert answer["status"] == "success", answer
        data = answer["data"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def value(self, promql: str) -> float | None:
        """The single value of ``promql``, or None when the vector is empty."""
        result = self.query(promql)
        assert len(result) <= 1, (promql, result)
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll until ``promql`` returns a non-empty vector."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.5)
        raise AssertionError(f"no result for {promql!r} after {timeout}s; targets: {self.targets()}\n{self.log()}")

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=10) as resp:
            return [
                {k: t.get(k) for k in ("scrapeUrl", "health", "lastError")}
                for t in json.loads(resp.read())["data"]["activeTargets"]
            ]

    def __enter__(self) -> Prometheus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

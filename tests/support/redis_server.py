"""A Redis for the Celery tests: the one on 127.0.0.1:6379 when it answers,
else a private redis-server (Debian package redis-server, installed by
.ci/bootstrap.sh) on a free port, without persistence, stopped at the end."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.net import free_port
from tests.support.procs import stop_process_group

SHARED_ADDRESS = ("127.0.0.1", 6379)
_START_TIMEOUT = 15.0


def answers_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when a Redis on host:port answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_url(db: int = 0) -> Iterator[str]:
    """Yield a redis:// URL: the shared server's, or a private server's."""
    if answers_ping(*SHARED_ADDRESS):
        yield f"redis://{SHARED_ADDRESS[0]}:{SHARED_ADDRESS[1]}/{db}"
        return
    with private_redis() as port:
        yield f"redis://127.0.0.1:{port}/{db}"


@contextmanager
def private_redis() -> Iterator[int]:
    """Start redis-server on a free port of 127.0.0.1; yield the port."""
    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
    if binary is None:
        raise RuntimeError(
            "nothing answers on 127.0.0.1:6379 and redis-server is not installed: "
            "install the Debian package redis-server (.ci/bootstrap.sh tools)"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="greenpool-redis-") as workdir:
        log = Path(workdir) / "redis.log"
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
                "--logfile",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + _START_TIMEOUT
            while not answers_ping("127.0.0.1", port):
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"redis-server on port {port} exited ({proc.returncode}): "
                        f"{log.read_text(errors='replace')[-2000:] if log.exists() else 'no log'}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"redis-server on 127.0.0.1:{port} did not answer PING within {_START_TIMEOUT} s"
                    )
                time.sleep(0.1)
            yield port
        finally:
            stop_process_group(proc, grace=10.0)

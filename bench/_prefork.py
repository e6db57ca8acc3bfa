"""A minimal pre-fork parent for the benchmark's own servers (bench.bare_hello, bench.tornado_stock).

The parent binds one listening socket, forks ``workers`` children that each call
``serve(sock)``, and waits. SIGTERM or SIGINT to the parent is passed on to the
children (then SIGKILL after 5 s); a child that dies is not replaced (a benchmark
run wants to see it, not hide it). The parent exits when every child has.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable


def bind(address: str, nodelay: bool) -> socket.socket:
    host, _, port = address.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, int(port)))
    sock.listen(2048)
    return sock


def run(
    sock: socket.socket,
    workers: int,
    serve: Callable[[socket.socket], None],
    after_fork: Callable[[], None] | None = None,
) -> int:
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                if after_fork is not None:
                    after_fork()
                serve(sock)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    alive = set(children)
    while alive and not stopping:
        _reap(alive)
        time.sleep(0.2)
    for pid in alive:
        _kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while alive and time.monotonic() < deadline:
        _reap(alive)
        time.sleep(0.05)
    for pid in alive:
        _kill(pid, signal.SIGKILL)
    return 0


def _reap(alive: set[int]) -> None:
    for pid in list(alive):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            alive.discard(pid)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass

"""Count the MySQL connects a process makes, for bench.run to read from outside.

Every stack of the server benchmark (greenpool's backend, Django's stock MySQL
backend on PyMySQL, django-db-connection-pool) opens its server connections
through ``pymysql.connections.Connection.connect``. ``install(directory)``
wraps that one method so each call adds to two 64-bit counters (attempts,
successes) in a small memory-mapped file ``<directory>/<pid>.count``; the
harness sums the files of the stack it runs. The cost is a lock and two
struct writes per connect, nothing per query.

The server's own ``Connections`` status counts every client of a shared
server, other developers' tests included; these counters count only the
stack under test. bench.run records both.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
from typing import Any

_FORMAT = "QQ"  # attempts, successes
SIZE = struct.calcsize(_FORMAT)

_installed: dict[str, Any] = {}


def install(directory: str) -> None:
    """Wrap PyMySQL's connect in this process (idempotent)."""
    if _installed.get("pid") == os.getpid():
        return
    import pymysql.connections

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{os.getpid()}.count")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.ftruncate(fd, SIZE)
    counters = mmap.mmap(fd, SIZE)
    os.close(fd)
    lock = threading.Lock()  # patched under gevent, a real lock in threads
    original = _installed.get("original") or pymysql.connections.Connection.connect

    def add(index: int) -> None:
        with lock:
            values = list(struct.unpack_from(_FORMAT, counters))
            values[index] += 1
            struct.pack_into(_FORMAT, counters, 0, *values)

    def connect(self: Any, sock: Any = None) -> Any:
        add(0)
        result = original(self, sock)
        add(1)
        return result

    pymysql.connections.Connection.connect = connect  # type: ignore[method-assign]
    _installed.update(pid=os.getpid(), original=original, counters=counters)


def read(directory: str) -> dict[str, int]:
    """Sum of every process's counters under ``directory``."""
    attempts = successes = 0
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return {"attempts": 0, "successes": 0}
    for name in names:
        if not name.endswith(".count"):
            continue
        try:
            with open(os.path.join(directory, name), "rb") as f:
                data = f.read(SIZE)
        except FileNotFoundError:
            continue
        if len(data) == SIZE:
            a, s = struct.unpack(_FORMAT, data)
            attempts += a
            successes += s
    return {"attempts": attempts, "successes": successes}


def clear(directory: str) -> None:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return
    for name in names:
        if name.endswith(".count"):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass

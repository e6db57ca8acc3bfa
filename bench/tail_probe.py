"""In-worker timing for bench/tail_anatomy.py: where a request's time goes.

Installed by bench.django_settings in every worker when GREENPOOL_BENCH_TAIL_DIR is
set (only bench.tail_anatomy sets it). It wraps, in this process only:

- Django's WSGIHandler.__call__: the application's time for a request ("app");
- PyMySQL's Connection.query: one statement, sent and answered ("query"); under
  gevent this includes the wait for the hub to resume the greenlet once the answer
  is in its socket;
- greenpool's Pool.getconn / putconn, when greenpool is used: the wait for a
  connection ("wait") and how long the request then holds it ("hold");
- under gevent, every wait of a greenlet for a PyMySQL socket to become readable:
  the time from the answer's arrival in the socket (the kernel's receive timestamp,
  SO_TIMESTAMPNS, read with MSG_PEEK) to the greenlet's resumption ("resume"). A
  statement whose answer is in the socket before the greenlet reads does not wait
  and gives no sample.

Samples go to DIR/<pid>.samples as "kind seconds" lines, appended every FLUSH_EVERY
samples (a few of the last ones may be lost when the worker stops; the report
gives the counts). Timing costs about a microsecond per call; nothing else changes.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import weakref
from typing import Any

FLUSH_EVERY = 200
# Linux: SO_TIMESTAMPNS turns on, and SCM_TIMESTAMPNS labels, a socket's receive
# timestamps (struct timespec, CLOCK_REALTIME). Not in Python's socket module.
SO_TIMESTAMPNS = 35

_state: dict[str, Any] = {}


def _record(kind: str, seconds: float) -> None:
    buf = _state["buf"]
    buf.append(f"{kind} {seconds:.6f}\n")
    if len(buf) >= FLUSH_EVERY:
        with open(_state["path"], "a") as f:
            f.write("".join(buf))
        buf.clear()


def install(directory: str) -> None:
    """Wrap the timed calls in this process (idempotent per process)."""
    if _state.get("pid") == os.getpid():
        return
    os.makedirs(directory, exist_ok=True)
    _state.update(pid=os.getpid(), path=os.path.join(directory, f"{os.getpid()}.samples"), buf=[])

    import pymysql.connections
    from django.core.handlers.wsgi import WSGIHandler

    query = pymysql.connections.Connection.query
    database_sockets = _time_resumes()

    def timed_query(self: Any, sql: Any, unbuffered: bool = False) -> Any:
        if database_sockets is not None and self._sock is not None and self._sock not in database_sockets:
            self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            database_sockets.add(self._sock)
        started = time.monotonic()
        try:
            return query(self, sql, unbuffered)
        finally:
            _record("query", time.monotonic() - started)

    pymysql.connections.Connection.query = timed_query  # type: ignore[method-assign]

    call = WSGIHandler.__call__

    def timed_call(self: Any, environ: Any, start_response: Any) -> Any:
        started = time.monotonic()
        try:
            return call(self, environ, start_response)
        finally:
            _record("app", time.monotonic() - started)

    WSGIHandler.__call__ = timed_call  # type: ignore[method-assign]

    try:
        from greenpool import pool as gp_pool
    except ImportError:
        return
    getconn, putconn = gp_pool.Pool.getconn, gp_pool.Pool.putconn
    checked_out: dict[int, float] = {}

    def timed_getconn(self: Any, timeout: Any = None) -> Any:
        started = time.monotonic()
        conn = getconn(self, timeout)
        now = time.monotonic()
        checked_out[id(conn)] = now
        _record("wait", now - started)
        return conn

    def timed_putconn(self: Any, conn: Any, discard: bool = False) -> None:
        since = checked_out.pop(id(conn), None)
        if since is not None:
            _record("hold", time.monotonic() - since)
        putconn(self, conn, discard)

    gp_pool.Pool.getconn = timed_getconn  # type: ignore[method-assign]
    gp_pool.Pool.putconn = timed_putconn  # type: ignore[method-assign]


def _time_resumes() -> weakref.WeakSet[Any] | None:
    """Under gevent's patched sockets, record "resume" for the sockets put in the
    returned set (PyMySQL's, as their first statement runs). None elsewhere."""
    import gevent.monkey

    if not gevent.monkey.is_module_patched("socket"):
        return None
    from gevent import _socket3

    watched: weakref.WeakSet[Any] = weakref.WeakSet()
    wait = _socket3.socket._wait

    def timed_wait(self: Any, watcher: Any, timeout_exc: Any = None) -> None:
        wait(self, watcher, timeout_exc)
        if watcher is not self._read_event or self not in watched:
            return
        resumed = time.time()
        try:
            _data, ancillary, _flags, _addr = self._sock.recvmsg(1, 64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return  # woken with nothing to read (a closed peer reads b"" and is stamped)
        for level, kind, data in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", data[:16])
                _record("resume", resumed - (seconds + nanoseconds / 1e9))

    _socket3.socket._wait = timed_wait  # type: ignore[method-assign]
    return watched

"""In-worker timing for bench/tail_anatomy.py: where a request's time goes.

Installed by bench.django_settings in every worker when GREENPOOL_BENCH_TAIL_DIR is
set (only bench.tail_anatomy sets it). It wraps, in this process only:

- Django's WSGIHandler.__call__: the application's time for a request ("app");
- PyMySQL's Connection.query: one statement, sent and answered ("query"); under
  gevent this includes the wait for the hub to resume the greenlet once the answer
  is in its socket;
- greenpool's Pool.getconn / putconn, when greenpool is used: the wait for a
  connection ("wait") and how long the request then holds it ("hold").

Samples go to DIR/<pid>.samples as "kind seconds" lines, appended every FLUSH_EVERY
samples (a few of the last ones may be lost when the worker stops; the report
gives the counts). Timing costs about a microsecond per call; nothing else changes.
"""

from __future__ import annotations

import os
import time
from typing import Any

FLUSH_EVERY = 200

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

    def timed_query(self: Any, sql: Any, unbuffered: bool = False) -> Any:
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

"""A small closed-loop HTTP/1.1 load client on gevent, for smoke checks and tests.

Shipped for users: it load-checks a deployment from its own host without wrk (docs/launcher.md).

    python -m greenpool.launch.loadgen http://127.0.0.1:8000/read --clients 500 --requests 5000 --duration 60

Each of --clients greenlets keeps one keep-alive connection (or, with
--no-keepalive, one per request) and sends requests back to back until
--requests have been sent in all or --duration seconds have passed. It prints
one JSON object: counts by status, errors by kind, latency percentiles and
the X-Greenpool-Worker values seen. Several URLs are spread over the clients
(client i uses URL i mod n), e.g. one per worker port.

Like browsers and nginx, it retries a request once on a new connection when
a reused keep-alive connection is closed before any byte of the answer came
back (the server closed it while the request was on its way; RFC 9112 9.3.1);
those are counted in "retried", not in "failed".

It never monkey-patches: it uses gevent's sockets directly, so it can be
imported anywhere. Only loopback and private test addresses should be targeted.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.pool
from gevent import socket


class _Stale(Exception):
    """A reused connection was closed before the answer started."""


class _Conn:
    def __init__(self, host: str, port: int, connect_timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.used = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def request(self, raw: bytes, timeout: float) -> tuple[int, dict[str, str], bytes]:
        self.sock.settimeout(timeout)
        reused = self.used > 0
        self.used += 1
        try:
            self.sock.sendall(raw)
            while b"\r\n\r\n" not in self.buf:
                if not self._fill():
                    if reused and not self.buf:
                        raise _Stale()
                    raise ConnectionError("connection closed before the response headers")
        except (ConnectionResetError, BrokenPipeError) as exc:
            if reused and not self.buf:
                raise _Stale() from exc
            raise
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            length = int(headers.get("content-length", "0"))
            while len(self.buf) < length:
                if not self._fill():
                    raise ConnectionError("connection closed in the response body")
            body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            while b"\r\n" not in self.buf:
                if not self._fill():
                    raise ConnectionError("connection closed in a chunk header")
            size_line, _, self.buf = self.buf.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(self.buf) < size + 2:
                if not self._fill():
                    raise ConnectionError("connection closed in a chunk")
            body += self.buf[:size]
            self.buf = self.buf[size + 2 :]
            if size == 0:
                return body


def run(
    urls: list[str],
    clients: int,
    requests: int,
    duration: float,
    timeout: float = 30.0,
    keepalive: bool = True,
    retry_stale: bool = True,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    targets = []
    for url in urls:
        parts = urlsplit(url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        conn_header = "" if keepalive else "Connection: close\r\n"
        raw = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{extra}{conn_header}\r\n".encode("latin-1")
        targets.append((parts.hostname or "127.0.0.1", parts.port or 80, raw))

    statuses: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    workers: collections.Counter = collections.Counter()
    latencies: list[float] = []
    counters = {"sent": 0, "retried": 0, "connects": 0}
    started = time.monotonic()
    deadline = started + duration

    def client(i: int) -> None:
        host, port, raw = targets[i % len(targets)]
        conn: _Conn | None = None
        while counters["sent"] < requests and time.monotonic() < deadline:
            counters["sent"] += 1
            t0 = time.monotonic()
            attempts = 0
            while True:
                attempts += 1
                try:
                    if conn is None:
                        conn = _Conn(host, port, min(timeout, 10.0))
                        counters["connects"] += 1
                    status, resp_headers, _body = conn.request(raw, timeout)
                except _Stale:
                    conn.close()  # type: ignore[union-attr]
                    conn = None
                    if retry_stale and attempts == 1:
                        counters["retried"] += 1
                        continue
                    errors["stale keep-alive connection"] += 1
                    status = None
                except (OSError, ValueError, ConnectionError) as exc:
                    if conn is not None:
                        conn.close()
                    conn = None
                    errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                    status = None
                break
            if status is None:
                continue
            latencies.append(time.monotonic() - t0)
            statuses[status] += 1
            worker = resp_headers.get("x-greenpool-worker")
            if worker:
                workers[worker] += 1
            if not keepalive or resp_headers.get("connection", "").lower() == "close":
                conn.close()  # type: ignore[union-attr]
                conn = None
        if conn is not None:
            conn.close()

    group = gevent.pool.Group()
    for i in range(clients):
        group.spawn(client, i)
    group.join(timeout=duration + timeout + 5)
    group.kill(block=True, timeout=2)
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        if not latencies:
            return 0.0
        return round(latencies[min(len(latencies) - 1, int(p / 100.0 * len(latencies)))] * 1000, 2)

    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    done = sum(statuses.values())
    return {
        "requests": done + sum(errors.values()),
        "ok": ok,
        "failed": done - ok + sum(errors.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "retried": counters["retried"],
        "connects": counters["connects"],
        "workers": dict(workers),
        "elapsed_s": round(elapsed, 3),
        "rps": round(done / elapsed, 1) if elapsed else 0.0,
        "latency_ms": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "max": pct(100)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m greenpool.launch.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("urls", nargs="+", metavar="URL")
    parser.add_argument("--clients", type=int, default=10, help="concurrent connections (default 10)")
    parser.add_argument("--requests", type=int, default=1000, help="requests in all (default 1000)")
    parser.add_argument("--duration", type=float, default=30.0, help="stop after this many seconds (default 30)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout, seconds (default 30)")
    parser.add_argument("--no-keepalive", action="store_true", help="a new connection per request")
    parser.add_argument("--no-retry-stale", action="store_true", help="count stale keep-alive closes as failures")
    parser.add_argument("-H", "--header", action="append", default=[], help="extra header, 'Name: value'")
    args = parser.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    result = run(
        args.urls,
        args.clients,
        args.requests,
        args.duration,
        args.timeout,
        keepalive=not args.no_keepalive,
        retry_stale=not args.no_retry_stale,
        headers={k.strip(): v.strip() for k, v in headers.items()},
    )
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

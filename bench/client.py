"""The benchmark's second HTTP client: raw latencies, to check what wrk reports.

    python -m bench.client closed URL --clients 100 --duration 5 [--warmup 1]
    python -m bench.client probe URL --clients 2 --interval 0.02 --duration 5

``closed``: like wrk, --clients keep-alive connections each sending requests back to
back (gevent, greenpool.launch.loadgen's HTTP/1.1 code), for --duration seconds after
--warmup. It keeps every latency and reports them raw, and also as wrk 4 would after
its coordinated-omission correction (``stats_correct`` in wrk's stats.c: at the end of
a run wrk takes interval = run time / (requests / connections), and for every
latency n >= 2 x interval it adds synthetic samples n - interval, n - 2 x interval, ...
down to interval). It also reports how evenly the connections were served (requests
per connection, the longest gap between two answers on one connection) and Little's
law's check: mean latency x rate / clients, which is at most 1 for real samples of a
closed loop.

``probe``: a few connections that each send one request every --interval seconds
(jittered), so their requests never queue behind their own: the latency a request
sees when it arrives at a loaded server, measured next to a wrk run.

One JSON object on standard output. Only loopback addresses should be targeted.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import gevent
import gevent.pool

from greenpool.launch.loadgen import _Conn, _Stale


def _target(url: str) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    raw = f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode("latin-1")
    return parts.hostname or "127.0.0.1", parts.port or 80, raw


def percentiles(samples_us: list[int] | list[float], weights: list[int] | None = None) -> dict[str, float]:
    """p50/p90/p99/p99.9/max/mean in ms of (optionally weighted) samples."""
    if not samples_us:
        return {"n": 0}
    if weights is None:
        ordered = sorted(samples_us)
        n = len(ordered)

        def at(q: float) -> float:
            return ordered[min(n - 1, max(0, int(round(q / 100.0 * n + 0.5)) - 1))]

        mean = sum(ordered) / n
        top = ordered[-1]
    else:
        pairs = sorted(zip(samples_us, weights))
        n = sum(weights)
        cumulative = []
        total = 0
        for value, weight in pairs:
            total += weight
            cumulative.append((total, value))

        def at(q: float) -> float:
            rank = max(1, int(round(q / 100.0 * n + 0.5)))
            for count, value in cumulative:
                if count >= rank:
                    return value
            return cumulative[-1][1]

        mean = sum(v * w for v, w in pairs) / n
        top = pairs[-1][0]
    return {
        "n": n,
        "p50_ms": at(50) / 1000,
        "p90_ms": at(90) / 1000,
        "p99_ms": at(99) / 1000,
        "p999_ms": at(99.9) / 1000,
        "max_ms": top / 1000,
        "mean_ms": mean / 1000,
    }


def wrk_corrected(latencies_us: list[int], runtime_us: int, connections: int) -> dict[str, float]:
    """The same samples after wrk 4's stats_correct (see the module docstring)."""
    complete = len(latencies_us)
    if not complete or complete // connections == 0:
        return percentiles(latencies_us)
    interval = runtime_us // (complete // connections)
    counts = Counter(latencies_us)
    extra: Counter = Counter()
    if interval > 0:
        for value, count in counts.items():
            if value < 2 * interval:
                continue
            m = value - interval
            while m > interval:
                extra[m] += count
                m -= interval
    merged = counts + extra
    values = list(merged.keys())
    return {
        **percentiles(values, [merged[v] for v in values]),
        "interval_us": interval,
        "synthetic_samples": sum(extra.values()),
    }


def closed(url: str, clients: int, duration: float, warmup: float, timeout: float) -> dict[str, Any]:
    host, port, raw = _target(url)
    statuses: Counter = Counter()
    errors: Counter = Counter()
    latencies: list[int] = []
    per_conn: list[int] = [0] * clients
    max_gap: list[float] = [0.0] * clients
    # greenpool-serve names the worker in X-Greenpool-Worker: latencies by the worker
    # that answered, and the connections it answered on.
    by_worker: dict[str, list[int]] = {}
    worker_conns: Counter = Counter()
    start = time.monotonic()
    measure_from = start + warmup
    deadline = measure_from + duration

    def client(i: int) -> None:
        conn: _Conn | None = None
        last = None
        counted: _Conn | None = None  # the connection already counted for its worker
        while True:
            t0 = time.monotonic()
            if t0 >= deadline:
                break
            try:
                if conn is None:
                    conn = _Conn(host, port, min(timeout, 10.0))
                status, _headers, _body = conn.request(raw, timeout)
            except (_Stale, OSError, ValueError, ConnectionError) as exc:
                if conn is not None:
                    conn.close()
                conn = None
                if t0 >= measure_from:
                    errors[type(exc).__name__] += 1
                continue
            t1 = time.monotonic()
            if t0 >= measure_from and t1 <= deadline:
                latencies.append(int((t1 - t0) * 1e6))
                worker = _headers.get("x-greenpool-worker")
                if worker:
                    by_worker.setdefault(worker, []).append(latencies[-1])
                    if counted is not conn:
                        counted = conn
                        worker_conns[worker] += 1
                statuses[status] += 1
                per_conn[i] += 1
                if last is not None:
                    max_gap[i] = max(max_gap[i], t1 - last)
                last = t1
            if _headers.get("connection", "").lower() == "close":
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    group = gevent.pool.Group()
    for i in range(clients):
        group.spawn(client, i)
    group.join(timeout=warmup + duration + timeout + 5)
    group.kill(block=True, timeout=2)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    runtime_us = int(duration * 1e6)
    done = len(latencies)
    rate = done / duration if duration else 0.0
    raw_stats = percentiles(latencies)
    return {
        "mode": "closed",
        "url": url,
        "clients": clients,
        "duration_s": duration,
        "warmup_s": warmup,
        "requests": done,
        "rps": round(rate, 1),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "non2xx": sum(v for k, v in statuses.items() if not 200 <= k < 300),
        "raw": raw_stats,
        "little_ratio": round(raw_stats.get("mean_ms", 0) / 1000 * rate / clients, 3) if done else None,
        "wrk_corrected": wrk_corrected(latencies, runtime_us, clients),
        "per_connection_requests": {"min": min(per_conn), "max": max(per_conn)},
        "max_gap_ms": {
            "median": round(sorted(max_gap)[len(max_gap) // 2] * 1000, 1),
            "max": round(max(max_gap) * 1000, 1),
        },
        "client_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 3),
        "per_worker": per_worker(by_worker, worker_conns),
    }


def per_worker(by_worker: dict[str, list[int]], connections: Counter) -> list[dict[str, Any]]:
    """Each answering worker's connections, requests and raw p50/p99, by worker id
    (empty for a server that does not name its workers)."""
    out = []
    for worker in sorted(by_worker):
        stats = percentiles(by_worker[worker])
        out.append(
            {
                "worker": worker,
                "connections": connections[worker],
                "requests": stats["n"],
                "p50_ms": stats["p50_ms"],
                "p99_ms": stats["p99_ms"],
            }
        )
    return out


def probe(url: str, clients: int, interval: float, duration: float, timeout: float) -> dict[str, Any]:
    host, port, raw = _target(url)
    statuses: Counter = Counter()
    errors: Counter = Counter()
    latencies: list[int] = []
    deadline = time.monotonic() + duration
    rng = random.Random(1)

    def client(i: int) -> None:
        conn: _Conn | None = None
        gevent.sleep(rng.uniform(0, interval))
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = _Conn(host, port, min(timeout, 10.0))
                status, headers, _body = conn.request(raw, timeout)
                latencies.append(int((time.monotonic() - t0) * 1e6))
                statuses[status] += 1
                if headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (_Stale, OSError, ValueError, ConnectionError) as exc:
                errors[type(exc).__name__] += 1
                if conn is not None:
                    conn.close()
                conn = None
            gevent.sleep(max(0.0, rng.uniform(0.5, 1.5) * interval - (time.monotonic() - t0)))
        if conn is not None:
            conn.close()

    group = gevent.pool.Group()
    for i in range(clients):
        group.spawn(client, i)
    group.join(timeout=duration + timeout + 5)
    group.kill(block=True, timeout=2)
    return {
        "mode": "probe",
        "url": url,
        "clients": clients,
        "interval_s": interval,
        "duration_s": duration,
        "requests": len(latencies),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(errors),
        "raw": percentiles(latencies),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("closed", help="closed loop, like wrk, raw latencies")
    c.add_argument("url")
    c.add_argument("--clients", type=int, default=100)
    c.add_argument("--duration", type=float, default=5.0)
    c.add_argument("--warmup", type=float, default=1.0)
    c.add_argument("--timeout", type=float, default=10.0)
    p = sub.add_parser("probe", help="a few paced connections next to another load")
    p.add_argument("url")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    if args.mode == "closed":
        result = closed(args.url, args.clients, args.duration, args.warmup, args.timeout)
    else:
        result = probe(args.url, args.clients, args.interval, args.duration, args.timeout)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench/client.py: raw percentiles and the copy of wrk 4's coordinated-omission correction."""

from __future__ import annotations

from bench.client import percentiles, wrk_corrected


def test_percentiles_are_of_the_raw_samples():
    stats = percentiles([1000] * 99 + [500_000])
    assert stats["n"] == 100
    assert stats["p50_ms"] == 1.0
    assert stats["max_ms"] == 500.0
    assert abs(stats["mean_ms"] - (99 * 1.0 + 500.0) / 100) < 1e-9


def test_correction_adds_what_wrk_adds_for_a_long_sample():
    # One connection, 4 answers in 130 us: wrk's interval is 130 // 4 = 32 us, and the
    # 100 us answer (>= 2 x 32) gets synthetic companions 68 and 36 (down to > 32).
    corrected = wrk_corrected([10, 10, 10, 100], runtime_us=130, connections=1)
    assert corrected["interval_us"] == 32
    assert corrected["synthetic_samples"] == 2
    assert corrected["n"] == 6


def test_correction_leaves_short_samples_alone():
    corrected = wrk_corrected([10, 12, 11, 10], runtime_us=43, connections=1)
    assert corrected["synthetic_samples"] == 0
    assert corrected["n"] == 4


def test_uneven_service_breaks_littles_law_only_after_the_correction():
    # Two connections for 1 s: one answered 9,998 times in a row (100 us each), the other
    # waiting 500 ms twice. Raw samples fit the closed loop; corrected ones do not.
    samples = [100] * 9998 + [500_000, 500_000]
    raw = percentiles(samples)
    corrected = wrk_corrected(samples, runtime_us=1_000_000, connections=2)
    rate = len(samples) / 1.0
    assert raw["mean_ms"] / 1000 * rate / 2 <= 1.0
    assert raw["p99_ms"] == 0.1
    assert corrected["synthetic_samples"] > 4000
    assert corrected["p90_ms"] > 100
    assert corrected["mean_ms"] / 1000 * rate / 2 > 1.0


def test_a_closed_run_reports_each_workers_connections_and_latencies():
    # A real HTTP server on loopback (gevent.pywsgi, in this process: the client's
    # sockets are gevent's) that names a worker per connection, as greenpool-serve's
    # workers do in X-Greenpool-Worker: connections alternate between a worker that
    # answers at once and one that takes 20 ms.
    import itertools
    import socket

    import gevent
    import gevent.pywsgi

    from bench.client import closed

    workers: dict[str, str] = {}
    next_worker = itertools.cycle(["0-fast", "1-slow"])

    def app(environ, start_response):
        worker = workers.setdefault(environ["REMOTE_PORT"], next(next_worker))
        if worker == "1-slow":
            gevent.sleep(0.02)
        start_response(
            "200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2"), ("X-Greenpool-Worker", worker)]
        )
        return [b"ok"]

    class Server(gevent.pywsgi.WSGIServer):
        def handle(self, sock, address):
            # pywsgi sends the headers and the body in two writes: without this the
            # body waits for the client's delayed ACK (40 ms), as greenpool-serve's does not.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().handle(sock, address)

    server = Server(("127.0.0.1", 0), app, log=None)
    server.start()
    try:
        result = closed(f"http://127.0.0.1:{server.server_port}/", clients=6, duration=1.0, warmup=0.2, timeout=5.0)
    finally:
        server.stop(timeout=2)
    by_id = {w["worker"]: w for w in result["per_worker"]}
    assert sorted(by_id) == ["0-fast", "1-slow"]
    assert by_id["0-fast"]["connections"] == by_id["1-slow"]["connections"] == 3
    assert sum(w["requests"] for w in result["per_worker"]) == result["requests"]
    assert by_id["1-slow"]["p50_ms"] >= 20.0 > by_id["0-fast"]["p50_ms"]


def test_a_server_that_names_no_worker_gets_no_per_worker_figures():
    from collections import Counter

    from bench.client import per_worker

    assert per_worker({}, Counter()) == []

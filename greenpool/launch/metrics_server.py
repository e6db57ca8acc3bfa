"""``--metrics-bind``: the master serves /metrics for all its workers.

One scrape target per greenpool-serve. At each scrape the master asks every
current worker for its stats over the worker's private unix socket (the same
answer `greenpool-serve stats` reads) and renders them with prometheus_client,
each series labelled by worker ("INDEX-PID", so a replaced worker's series end
and its successor's begin). The HTTP server runs in a thread of the master:
a slow or hung scrape never holds up the master's loop, and a worker that does
not answer within STATS_TIMEOUT is left out of that scrape (and counted).
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from greenpool import metrics
from greenpool.launch import sockets, stats
from greenpool.launch.errors import ExitCode, LaunchError

logger = logging.getLogger("greenpool.launch")

STATS_TIMEOUT = 2.0

#: The master's view of its workers at scrape time: [(worker label, control socket path)].
WorkerList = Callable[[], list[tuple[str, str]]]


class MasterCounters:
    """What only the master knows: worker restarts, by reason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.restarts: dict[str, int] = {}
        self.scrape_errors = 0

    def restarted(self, reason: str) -> None:
        with self._lock:
            self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def scrape_error(self) -> None:
        with self._lock:
            self.scrape_errors += 1


#: greenpool-serve's own series: name -> (type, labels, help).
SERIES = {
    "greenpool_serve_requests": ("counter", "worker, status_class", "Requests answered, by status class"),
    "greenpool_serve_requests_in_flight": ("gauge", "worker", "Requests being served"),
    "greenpool_serve_request_duration_seconds": (
        "histogram",
        "worker",
        "Time from a request's headers read to its response sent",
    ),
    "greenpool_serve_worker_restarts": (
        "counter",
        "reason",
        "Workers started again: died, failed_boot, replaced (--max-requests, HUP)",
    ),
    "greenpool_serve_scrape_errors": (
        "counter",
        "",
        "Workers that did not answer the master's stats query during a scrape",
    ),
}


def _worker_families(workers: list[tuple[str, dict[str, Any]]], counters: MasterCounters) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    def family(kind: type, name: str) -> Any:
        labels = [label.strip() for label in SERIES[name][1].split(",") if label.strip()]
        return kind(name, SERIES[name][2], labels=labels)

    by_class = family(CounterMetricFamily, "greenpool_serve_requests")
    in_flight = family(GaugeMetricFamily, "greenpool_serve_requests_in_flight")
    duration = family(HistogramMetricFamily, "greenpool_serve_request_duration_seconds")
    for label, data in workers:
        requests = data["requests"]
        for key, value in sorted(requests.items()):
            if key.startswith("status_"):
                by_class.add_metric([label, key[len("status_") :]], value)
        in_flight.add_metric([label], requests["in_flight"])
        hist = data.get("duration")
        if hist is not None:
            duration.add_metric([label], metrics.cumulative_buckets(hist), hist["sum"])
    restarts = family(CounterMetricFamily, "greenpool_serve_worker_restarts")
    for reason, count in sorted(counters.restarts.items()):
        restarts.add_metric([reason], count)
    errors = family(CounterMetricFamily, "greenpool_serve_scrape_errors")
    errors.add_metric([], counters.scrape_errors)
    yield from (by_class, in_flight, duration, restarts, errors)


class MetricsServer:
    """/metrics on one TCP address, served from a daemon thread of the master."""

    def __init__(self, address: str, workers: WorkerList, counters: MasterCounters) -> None:
        self.address = sockets.parse_address(address)
        self._workers = workers
        self.counters = counters
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind now (a bind failure is BIND_ERROR naming the address) and serve."""
        if importlib.util.find_spec("prometheus_client") is None:
            raise LaunchError(
                ExitCode.USAGE, "--metrics-bind needs the prometheus_client package: pip install 'greenpool[metrics]'"
            )
        sock = sockets.bind(self.address, backlog=64)
        server = _Server(sock, self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="greenpool-metrics", daemon=True
        )
        self._thread.start()
        logger.info("metrics on http://%s/metrics", sockets.describe_socket(sock))

    def stop(self, timeout: float = 5.0) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None

    def scrape(self, accept: str) -> tuple[bytes, str]:
        answers = []
        for label, path in self._workers():
            try:
                answers.append((label, stats.query(path, timeout=STATS_TIMEOUT)))
            except (OSError, ValueError) as exc:
                self.counters.scrape_error()
                logger.info("metrics: worker %s did not answer its stats query: %s", label, exc)
        collector = metrics.Collector(
            lambda: [({"worker": label}, data.get("metrics", {})) for label, data in answers],
            extra=lambda: _worker_families(answers, self.counters),
        )
        return metrics.render(collector, openmetrics="application/openmetrics-text" in accept)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, sock: socket.socket, owner: MetricsServer) -> None:
        self.owner = owner
        super().__init__(sock.getsockname()[:2], _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock  # already bound and listening (sockets.bind)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self.path.split("?", 1)[0] != "/metrics":
            self._send(404, b"not found: only /metrics is served here\n", "text/plain; charset=utf-8")
            return
        try:
            body, content_type = self.server.owner.scrape(self.headers.get("Accept", ""))
        except Exception as exc:  # a bug must answer 500 with its name, not kill the thread silently
            logger.exception("metrics: the scrape failed")
            self._send(500, f"scrape failed: {type(exc).__name__}: {exc}\n".encode(), "text/plain; charset=utf-8")
            return
        self._send(200, body, content_type)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        logger.debug("metrics: %s - %s", self.address_string(), format % args)


def markdown_reference() -> str:
    """docs/observability.md's series table: the pool's and greenpool-serve's."""
    return metrics.markdown_reference(
        (f"{name}_total" if kind == "counter" else name, kind, labels, help_text)
        for name, (kind, labels, help_text) in SERIES.items()
    )


if __name__ == "__main__":
    import sys

    sys.stdout.write(markdown_reference())

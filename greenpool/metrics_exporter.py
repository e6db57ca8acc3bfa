"""A standalone /metrics for a host whose processes write to a spool directory
(GREENPOOL_METRICS_DIR), such as a Celery host with no web server:

    GREENPOOL_METRICS_DIR=/run/greenpool-metrics celery -A proj worker ...
    python -m greenpool.metrics_exporter --dir /run/greenpool-metrics --bind 127.0.0.1:9108

It reads the snapshots the processes wrote (greenpool.metrics.read_spool; a
process that is gone has its file removed) and answers each scrape with all of
them, labelled by pid. It imports neither Django nor a database driver.
"""

from __future__ import annotations

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from greenpool import metrics


def make_server(directory: str, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.split("?", 1)[0] != "/metrics":
                body, status, content_type = b"not found: only /metrics is served here\n", 404, "text/plain"
            else:
                # Only the other processes' files: this exporter runs no pool of its own.
                collector = metrics.Collector(
                    lambda: [
                        (labels, snap)
                        for labels, snap in metrics.read_spool(directory)
                        if snap.get("pools") or snap.get("holds")
                    ]
                )
                body, content_type = metrics.render(
                    collector, "application/openmetrics-text" in self.headers.get("Accept", "")
                )
                status = 200
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
            return  # one line per scrape every few seconds is noise

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m greenpool.metrics_exporter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help=f"the spool directory ({metrics.SPOOL_ENV} of the processes)")
    parser.add_argument(
        "--bind", default="127.0.0.1:9108", help="HOST:PORT to serve /metrics on (default 127.0.0.1:9108)"
    )
    args = parser.parse_args(argv)
    host, _, port = args.bind.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--bind {args.bind!r}: expected HOST:PORT")
    try:
        server = make_server(args.dir, host.strip("[]"), int(port))
    except OSError as exc:
        print(f"greenpool.metrics_exporter: cannot bind {args.bind}: {exc.strerror or exc}", file=sys.stderr)
        return 5  # the launcher's BIND_ERROR
    print(f"greenpool.metrics_exporter: /metrics for {args.dir} on http://{args.bind}/metrics", file=sys.stderr)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

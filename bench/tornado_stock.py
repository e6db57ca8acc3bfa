"""Tornado's own WSGIContainer serving the benchmark's Django site, as users run it without greenpool.

    python -m bench.tornado_stock --bind 127.0.0.1:8000 --workers 2 --mode executor --threads 10
    python -m bench.tornado_stock --bind 127.0.0.1:8000 --workers 2 --mode ioloop

``executor``: ``WSGIContainer(app, executor=ThreadPoolExecutor(threads))``, Tornado's
documented way to keep a blocking WSGI app off the IOLoop (Tornado 6.3+).
``ioloop``: ``WSGIContainer(app)``: Django runs on the IOLoop thread. Tornado 6 runs on
asyncio, so Django's ORM refuses to run there (SynchronousOnlyOperation); bench.run
records that as "cannot serve" for the database paths.

Stock Tornado otherwise: ``tornado.netutil.bind_sockets`` in the parent, forked
children (bench/_prefork.py), Django set up in each child after the fork.
Errors that Django turns into 500 responses are written to standard error, one
line each, so the harness can say why a stack could not serve.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import signal
import socket
import sys

from bench import _prefork


def serve(sock: socket.socket, mode: str, threads: int) -> None:
    from django.core.wsgi import get_wsgi_application
    from tornado.httpserver import HTTPServer
    from tornado.wsgi import WSGIContainer

    app = get_wsgi_application()
    if mode == "executor":
        container = WSGIContainer(app, executor=concurrent.futures.ThreadPoolExecutor(threads))
    else:
        container = WSGIContainer(app)

    async def main() -> None:
        server = HTTPServer(container)
        server.add_sockets([sock])
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        server.stop()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tornado_stock", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT (default 127.0.0.1:8000)")
    parser.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--mode", choices=("executor", "ioloop"), default="executor")
    parser.add_argument("--threads", type=int, default=10, help="executor threads per process (default 10)")
    args = parser.parse_args(argv)
    from tornado.netutil import bind_sockets

    host, _, port = args.bind.rpartition(":")
    sockets = bind_sockets(int(port), address=host, backlog=2048)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return _prefork.run(sockets[0], args.workers, lambda sock: serve(sock, args.mode, args.threads))


if __name__ == "__main__":
    sys.exit(main())

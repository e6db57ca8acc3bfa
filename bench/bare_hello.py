"""The benchmark's ceiling: a hello-world WSGI app on bare gevent.pywsgi.

    python -m bench.bare_hello --bind 127.0.0.1:8000 --workers 2

No Django, no database, no launcher: the parent binds the socket (with
TCP_NODELAY, see docs/launcher.md), forks --workers children that each serve
it with gevent.pywsgi.WSGIServer (bench/_prefork.py), and waits. Every request
gets ``hello\\n``, the demo's /hello body.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

from bench import _prefork  # noqa: E402

BODY = b"hello\n"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


def serve(sock: socket.socket) -> None:
    import gevent
    from gevent.pywsgi import WSGIServer

    server = WSGIServer(sock, application, log=None)
    gevent.signal_handler(signal.SIGTERM, server.stop, 1)
    gevent.signal_handler(signal.SIGINT, server.stop, 1)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_hello", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1:8000", help="HOST:PORT (default 127.0.0.1:8000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    return _prefork.run(_prefork.bind(args.bind, nodelay=True), args.workers, serve)


if __name__ == "__main__":
    sys.exit(main())

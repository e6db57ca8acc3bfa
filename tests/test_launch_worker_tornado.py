"""greenpool/launch/worker_tornado.py: pieces testable without starting a worker
(the worker itself runs in tests/test_launch_serve.py)."""

from __future__ import annotations

import socket

from greenpool.launch import worker
from greenpool.launch.worker_tornado import accept_batch


def test_one_wake_up_accepts_at_most_accept_batch_connections():
    # Workers sharing a socket are all woken by a connect; one that took every waiting
    # connection (Tornado's own handler takes up to 128) left its siblings idle.
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    listener.setblocking(False)
    clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(worker.ACCEPT_BATCH * 2 + 1)]
    accepted: list[socket.socket] = []
    try:
        counts = [accept_batch(listener, lambda conn, _addr: accepted.append(conn)) for _ in range(4)]
        assert counts == [worker.ACCEPT_BATCH, worker.ACCEPT_BATCH, 1, 0]
        assert len(accepted) == len(clients)
    finally:
        for s in accepted + clients:
            s.close()
        listener.close()

"""greenpool/launch/worker_tornado.py: pieces testable without starting a worker
(the worker itself runs in tests/test_launch_serve.py)."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from greenpool.launch import client_sockets
from greenpool.launch.worker_tornado import accept_batch


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the accept queue's length is read from Linux's tcp_info"
)
def test_one_wake_up_accepts_this_workers_share_of_the_waiting_connections():
    # Workers sharing a socket are all woken by a connect; one that took every waiting
    # connection (Tornado's own handler takes up to 128) left its siblings idle, and
    # one that took a single connection per wake-up left a burst waiting for seconds.
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    listener.setblocking(False)
    clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(8)]
    accepted: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 5
        while client_sockets.pending_connections(listener) != len(clients) and time.monotonic() < deadline:
            time.sleep(0.01)
        counts = [accept_batch(listener, 2, lambda conn, _addr: accepted.append(conn)) for _ in range(5)]
        assert counts == [4, 2, 1, 1, 0]  # half of 8, half of 4, half of 2 rounded up, the last, none
        assert len(accepted) == len(clients)
    finally:
        for s in accepted + clients:
            s.close()
        listener.close()

"""greenpool/launch/client_sockets.py: the accept budget, on real listening sockets
(the workers that use it run in tests/test_launch_serve.py)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from greenpool.launch import client_sockets

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the accept queue's length is read from Linux's tcp_info"
)


@contextlib.contextmanager
def tcp_listener_with_waiting(count: int) -> Iterator[socket.socket]:
    """A listening socket with `count` connections completed by the kernel and not yet accepted."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    clients = [socket.create_connection(listener.getsockname(), timeout=5) for _ in range(count)]
    try:
        deadline = time.monotonic() + 5
        while client_sockets.pending_connections(listener) != count and time.monotonic() < deadline:
            time.sleep(0.01)  # the handshakes complete in the kernel, asynchronously
        yield listener
    finally:
        for client in clients:
            client.close()
        listener.close()


@linux_only
def test_pending_connections_counts_the_accept_queue():
    with tcp_listener_with_waiting(7) as listener:
        assert client_sockets.pending_connections(listener) == 7
        listener.accept()[0].close()
        listener.accept()[0].close()
        assert client_sockets.pending_connections(listener) == 5


def test_pending_connections_is_unknown_for_a_unix_socket():
    with tempfile.TemporaryDirectory() as tmp:
        listener = socket.socket(socket.AF_UNIX)
        try:
            listener.bind(os.path.join(tmp, "s"))
            listener.listen(8)
            assert client_sockets.pending_connections(listener) is None
            assert client_sockets.accept_budget(listener, shared_by=2) == client_sockets.ACCEPT_BATCH
        finally:
            listener.close()


@linux_only
def test_accept_budget_takes_this_workers_share_of_the_queue_rounded_up():
    # Two workers share the socket: each takes half of what waits, so a burst is split
    # instead of all going to whichever worker woke first.
    with tcp_listener_with_waiting(9) as listener:
        assert client_sockets.accept_budget(listener, shared_by=2) == 5
        assert client_sockets.accept_budget(listener, shared_by=1) == 9
        assert client_sockets.accept_budget(listener, shared_by=20) == 1


@linux_only
def test_accept_budget_is_capped_and_never_zero():
    with tcp_listener_with_waiting(client_sockets.ACCEPT_MAX + 10) as listener:
        assert client_sockets.accept_budget(listener, shared_by=1) == client_sockets.ACCEPT_MAX
    with tcp_listener_with_waiting(0) as listener:
        # Woken with nothing waiting (a sibling took it): try one, as gevent would.
        assert client_sockets.accept_budget(listener, shared_by=2) == 1

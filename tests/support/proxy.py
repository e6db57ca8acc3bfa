"""A small threaded TCP relay for network-fault tests.

Point a client at the proxy instead of the server, then break the network under it::

    with TCPProxy("127.0.0.1", 3306) as proxy:
        conn = pymysql.connect(**proxy.route(mysql_params))
        proxy.stall()    # bytes stop flowing both ways; sockets stay open (a blackhole)
        proxy.resume()   # held bytes flow again
        proxy.stall_replies()  # only the server's bytes stop: requests still reach it
        proxy.cut()      # every open connection is closed (FIN; cut(reset=True) sends RST)

New connections are accepted while stalled (the kernel completes the handshake), but no
byte crosses until resume(): the client sees a connect that hangs at the greeting.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from typing import Any

_POLL = 0.1  # how often blocked threads look at the proxy's state, in seconds
_CHUNK = 65536


class _Pair:
    """One client connection and its upstream connection."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self._lock = threading.Lock()
        self.closed = False
        self.end_reason: BaseException | str | None = None  # why a relay thread ended it

    def close(self, reset: bool = False) -> None:
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            # OSError here means the peer already shut the socket; close() is still needed.
            with contextlib.suppress(OSError):
                if reset:
                    # Linger 0: close() sends RST instead of FIN.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    # Wakes a thread blocked in sendall() on this socket.
                    sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class TCPProxy:
    """Relay from a free port on ``listen_host`` to ``target_host:target_port``."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.connect_timeout = connect_timeout
        self._listen_addr = (listen_host, listen_port)
        self._listener: socket.socket | None = None
        self._flowing = threading.Event()
        self._flowing.set()
        self._replies_flowing = threading.Event()  # the server-to-client direction only
        self._replies_flowing.set()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._threads: list[threading.Thread] = []
        self.accepted = 0
        self.upstream_errors: list[OSError] = []

    # ------------------------------------------------------------------ control

    def start(self) -> TCPProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self._listen_addr)
        listener.listen(128)
        self._listener = listener
        self._spawn(self._accept_loop, name=f"proxy-accept-{self.port}")
        return self

    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("TCPProxy.start() has not been called")
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def host(self) -> str:
        return self.address[0]

    @property
    def port(self) -> int:
        return self.address[1]

    def route(self, params: dict[str, Any]) -> dict[str, Any]:
        """Copy of connection ``params`` (host, port, ...) that goes through this proxy."""
        return {**params, "host": self.host, "port": self.port}

    @property
    def open_connections(self) -> int:
        with self._lock:
            return sum(1 for pair in self._pairs if not pair.closed)

    def stall(self) -> None:
        """Stop forwarding bytes in both directions, keeping every connection open."""
        self._flowing.clear()

    def stall_replies(self) -> None:
        """Stop forwarding the server's bytes only: what clients send still
        reaches the server, which runs it; the answers are held."""
        self._replies_flowing.clear()

    def resume(self) -> None:
        """Forward again, starting with the bytes held during the stall."""
        self._flowing.set()
        self._replies_flowing.set()

    def cut(self, reset: bool = False) -> int:
        """Close every open connection (RST with ``reset``); returns how many were cut."""
        with self._lock:
            pairs = list(self._pairs)
            self._pairs.clear()
        for pair in pairs:
            pair.close(reset=reset)
        return len(pairs)

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, cut all connections and wait (bounded) for the relay threads."""
        self._closing.set()
        self.resume()  # let stalled threads notice the close
        if self._listener is not None:
            self._listener.close()
        self.cut()
        for thread in self._threads:
            thread.join(timeout)
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"TCPProxy threads still running {timeout} s after close(): {alive}")

    def __enter__(self) -> TCPProxy:
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ relay threads

    def _spawn(self, target: Any, *args: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closing.is_set():
            try:
                readable, _, _ = select.select([self._listener], [], [], _POLL)
                if not readable:
                    continue
                client, _ = self._listener.accept()
            except (OSError, ValueError):
                # close() closed the listener under us: that is the way out of this loop.
                if self._closing.is_set():
                    return
                raise
            self.accepted += 1
            self._connect_pair(client)

    def _connect_pair(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=self.connect_timeout)
        except OSError as exc:
            # The target is down: the client sees its connection closed, as it would with
            # no proxy. Kept for tests that want to assert on it.
            self.upstream_errors.append(exc)
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            # MySQL packets are small; Nagle would add delays the real network does not have.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(client, upstream)
        with self._lock:
            if self._closing.is_set():
                pair.close()
                return
            self._pairs.add(pair)
        n = self.accepted
        self._spawn(self._pump, pair, client, upstream, (self._flowing,), name=f"proxy-{self.port}-{n}-up")
        self._spawn(
            self._pump,
            pair,
            upstream,
            client,
            (self._flowing, self._replies_flowing),
            name=f"proxy-{self.port}-{n}-down",
        )

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket, gates: tuple[threading.Event, ...]) -> None:
        try:
            while not pair.closed:
                readable, _, _ = select.select([src], [], [], _POLL)
                if not readable:
                    continue
                data = src.recv(_CHUNK)
                # While stalled, hold this chunk (or the EOF: a blackholed network does not
                # deliver FINs either); the rest waits in the kernel's buffers.
                for gate in gates:
                    while not gate.wait(_POLL):
                        if pair.closed:
                            return
                if not data:
                    pair.end_reason = pair.end_reason or "EOF"  # the sender closed its side
                    break
                dst.sendall(data)
        except (OSError, ValueError) as exc:
            # cut()/close() or the peer closed a socket of this pair: the pair is over.
            # (select() raises ValueError on a socket closed by another thread.)
            pair.end_reason = pair.end_reason or exc
        finally:
            pair.close()
            with self._lock:
                self._pairs.discard(pair)

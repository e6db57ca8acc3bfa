"""The master's listening sockets, in the three ways workers may share them.

* one shared socket per ``--bind`` address, inherited by every worker (the default);
* ``--worker-ports``: worker i gets its own socket on port + i (unix: path.i), so
  nginx can balance by requests in flight and see each worker;
* ``--reuse-port``: each worker binds its own SO_REUSEPORT socket; the master only
  checks at start that the addresses are free.

The master binds before it starts any worker and hands each worker its sockets'
descriptors (``for_worker``); a worker added by TTIN gets its port then
(``bind_worker``), and one removed by TTOU gives it back (``unbind_worker``).
"""

from __future__ import annotations

import socket
from typing import Any

from greenpool.launch import sockets
from greenpool.launch.errors import LaunchError
from greenpool.launch.sockets import Address

# The highest TCP port: --worker-ports gives worker i port + i.
MAX_PORT = 65535


class Listeners:
    def __init__(self, addresses: list[Address], backlog: int, *, worker_ports: bool, reuse_port: bool) -> None:
        self.addresses = addresses
        self.backlog = backlog
        self.worker_ports = worker_ports
        self.reuse_port = reuse_port
        self.shared: list[socket.socket] = []
        self.per_worker: dict[int, list[socket.socket]] = {}
        self.unix_paths: list[str] = []  # files this master made, removed by close()

    def bind(self, workers: int) -> None:
        """Bind for ``workers`` workers before any starts (LaunchError naming the address)."""
        if self.reuse_port:
            for address in self.addresses:
                sockets.refuse_if_answered(address)  # another SO_REUSEPORT server would pass the test bind
                sockets.bind(address, self.backlog, reuse_port=True, listen=False).close()
            return
        if self.worker_ports:
            for index in range(workers):
                self.bind_worker(index)
            return
        for address in self.addresses:
            self.shared.append(sockets.bind(address, self.backlog))
            if address.kind == "unix":
                self.unix_paths.append(address.path)

    def port_past_max(self, index: int) -> str | None:
        """Why worker ``index`` cannot have its own port, or None."""
        if not self.worker_ports:
            return None
        for address in self.addresses:
            if address.kind == "tcp" and address.port + index > MAX_PORT:
                return f"it would listen on port {address.port + index} ({address} + {index}), past {MAX_PORT}"
        return None

    def bind_worker(self, index: int) -> None:
        """--worker-ports: worker ``index``'s own sockets (nothing to do when they exist)."""
        if not self.worker_ports or index in self.per_worker:
            return
        socks: list[socket.socket] = []
        try:
            for address in self.addresses:
                worker_address = address.for_worker(index)
                socks.append(sockets.bind(worker_address, self.backlog))
                if worker_address.kind == "unix":
                    self.unix_paths.append(worker_address.path)
        except LaunchError:
            for sock in socks:
                sock.close()
            raise
        self.per_worker[index] = socks

    def unbind_worker(self, index: int) -> None:
        """--worker-ports: close worker ``index``'s sockets (and remove its unix socket files)."""
        for sock in self.per_worker.pop(index, []):
            if sock.family == socket.AF_UNIX:
                path = sock.getsockname()
                if path in self.unix_paths:
                    self.unix_paths.remove(path)
                    sockets.remove_file(path)
            sock.close()

    def _sockets_of(self, index: int) -> list[socket.socket]:
        return self.per_worker.get(index, []) if self.worker_ports else self.shared

    def for_worker(self, index: int, workers: int) -> tuple[list[dict[str, Any]], list[int]]:
        """What worker ``index`` (of ``workers``) listens on, for its spec, and the
        descriptors it inherits. A worker takes its share of a shared socket's queue
        per wake-up (client_sockets.accept_budget): ``shared_by`` says how many share it."""
        if self.reuse_port:
            return [{"address": str(a)} for a in self.addresses], []
        shared_by = 1 if self.worker_ports else workers
        socks = self._sockets_of(index)
        listen = [{"fd": s.fileno(), "address": sockets.describe_socket(s), "shared_by": shared_by} for s in socks]
        return listen, [s.fileno() for s in socks]

    def names(self, index: int) -> list[str]:
        """Worker ``index``'s addresses as the logs and `greenpool-serve stats` show them."""
        if self.reuse_port:
            return [str(a) for a in self.addresses]
        return [sockets.describe_socket(s) for s in self._sockets_of(index)]

    def urls(self) -> list[str]:
        """Where clients reach the workers: every worker's port, or the shared addresses."""
        indexes = sorted(self.per_worker) if self.worker_ports else [0]
        return [sockets.parse_address(name).url for i in indexes for name in self.names(i)]

    def close(self) -> None:
        for sock in self.shared:
            sock.close()
        for socks in self.per_worker.values():
            for sock in socks:
                sock.close()
        self.shared = []
        self.per_worker = {}
        for path in self.unix_paths:
            sockets.remove_file(path)
        self.unix_paths = []

"""Listening addresses: parse --bind values, bind them, tune them.

The master binds every listening socket before it starts a worker, so a taken
port is one clear error at start-up, and a worker that restarts inherits the
same socket: connections that arrive meanwhile wait in the backlog instead of
being refused.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import stat
from dataclasses import dataclass

from greenpool.launch.errors import ExitCode, LaunchError

logger = logging.getLogger("greenpool.launch")


@dataclass(frozen=True)
class Address:
    """A --bind value: ``HOST:PORT``, ``[V6]:PORT``, ``:PORT`` or ``unix:PATH``."""

    kind: str  # "tcp" or "unix"
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def for_worker(self, index: int) -> Address:
        """The address worker ``index`` listens on with --worker-ports: the
        port plus the index, or the path with ``.INDEX`` appended."""
        if self.kind == "unix":
            return Address("unix", path=f"{self.path}.{index}")
        return Address("tcp", host=self.host, port=self.port + index)

    @property
    def url(self) -> str:
        if self.kind == "unix":
            return f"http+unix://{self.path}"
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def slug(self) -> str:
        """A file-name-safe form, for the default control directory."""
        raw = str(self)
        return "".join(c if c.isalnum() or c in "-." else "_" for c in raw).strip("_") or "default"


def parse_address(value: str) -> Address:
    """Parse one --bind value; ValueError names what is wrong."""
    value = value.strip()
    if not value:
        raise ValueError("an empty address")
    if value.startswith("unix:"):
        path = value[len("unix:") :]
        if not path:
            raise ValueError(f"{value!r}: unix: needs a path, e.g. unix:/run/greenpool.sock")
        return Address("unix", path=os.path.abspath(path))
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r}: expected [IPV6]:PORT")
    else:
        host, sep, port = value.rpartition(":")
        if not sep:
            raise ValueError(f"{value!r}: expected HOST:PORT, :PORT or unix:PATH")
        if ":" in host:
            raise ValueError(f"{value!r}: write an IPv6 address in brackets: [{host}]:{port}")
    try:
        port_num = int(port)
    except ValueError:
        raise ValueError(f"{value!r}: the port {port!r} is not a number") from None
    if not 0 <= port_num <= 65535:
        raise ValueError(f"{value!r}: the port must be 0-65535")
    return Address("tcp", host=host, port=port_num)


def _family(address: Address) -> int:
    if address.kind == "unix":
        return socket.AF_UNIX
    try:
        return socket.AF_INET6 if ipaddress.ip_address(address.host or "0.0.0.0").version == 6 else socket.AF_INET
    except ValueError:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        return infos[0][0]


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY, on a listening socket so every accepted socket has it (on
    Linux accepted sockets inherit it). Without it a keep-alive response can
    wait ~40 ms: Nagle's algorithm against the client's delayed ACK."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def bind(address: Address, backlog: int, *, reuse_port: bool = False, listen: bool = True) -> socket.socket:
    """Bind (and listen on) ``address``; LaunchError(BIND_ERROR) says why not."""
    if address.kind == "unix":
        try:
            _clear_stale_unix_socket(address)
        except OSError as exc:  # the path's directory is missing, not a directory, not ours
            raise LaunchError(ExitCode.BIND_ERROR, f"cannot bind {address}: {_why(exc)}") from None
    try:
        family = _family(address)
    except (OSError, UnicodeError) as exc:  # UnicodeError: a name the IDNA codec refuses (a label over 63)
        raise LaunchError(
            ExitCode.BIND_ERROR, f"cannot bind {address}: cannot resolve {address.host!r}: {exc}"
        ) from None
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:  # out of descriptors
        raise LaunchError(ExitCode.BIND_ERROR, f"cannot bind {address}: {_why(exc)}") from None
    try:
        if address.kind == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            set_nodelay(sock)
            sock.bind((address.host, address.port))
        else:
            sock.bind(address.path)
        if listen:
            sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise LaunchError(ExitCode.BIND_ERROR, f"cannot bind {address}: {_why(exc)}") from None
    return sock


def refuse_if_answered(address: Address) -> None:
    """--reuse-port: a test bind succeeds next to another SO_REUSEPORT listener of
    the same user (the kernel would then share connections with it), so first
    connect: if anything answers on ``address``, it is taken."""
    if address.kind != "tcp":
        return
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(address.host, address.host)
    try:
        probe = socket.create_connection((host, address.port), timeout=1.0)
    except OSError:
        return  # refused (or unreachable): nobody listens; bind() tells the rest
    probe.close()
    raise LaunchError(ExitCode.BIND_ERROR, f"cannot bind {address}: {_why(OSError(errno.EADDRINUSE, 'in use'))}")


def _why(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (another server listens there; pick another port or stop it)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges; a unix socket needs a writable directory)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "that address is not one of this machine's"
    return exc.strerror or str(exc)


def _clear_stale_unix_socket(address: Address) -> None:
    """Remove a socket file left by a server that is gone; refuse to touch a
    live one or a file that is not a socket."""
    try:
        mode = os.stat(address.path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise LaunchError(ExitCode.BIND_ERROR, f"cannot bind {address}: {address.path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(address.path)
    except OSError:
        os.unlink(address.path)  # nobody answers: a leftover
    else:
        raise LaunchError(ExitCode.BIND_ERROR, f"cannot bind {address}: another server is listening on {address.path}")
    finally:
        probe.close()


def describe_socket(sock: socket.socket) -> str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{name}"
    host, port = name[0], name[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def remove_file(path: str) -> None:
    """Remove a file of ours (a unix socket, the master's state) that may already be gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except OSError as exc:  # left behind; the next start, or the user, can remove it
        logger.warning("could not remove %s: %s", path, exc)

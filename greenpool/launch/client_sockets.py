"""A worker's client connections, as the kernel sees them: how many wait to be
accepted, this worker's share of them, and whether one holds unread bytes.

Both workers use these; they read the kernel's counters (TCP_INFO, FIONREAD)
and never read or wait on a socket.
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct
import termios
from typing import Any

# How many connections a worker accepts per wake-up of its listening socket.
# Workers that share one socket are all woken by a connect; one that accepted
# everything waiting (gevent's default is 100, Tornado's 128) could take a whole
# burst of keep-alive connections and leave its siblings idle for as long as
# those connections live (measured: all 100 of wrk's connections on one of two
# Tornado workers, half the throughput). One per wake-up is balanced but slow
# when the worker is busy: a busy gevent worker wakes for its listening socket
# once per hub turn, every few tens of ms, so 500 new connections waited up to
# 4.6 s in the accept queue (wrk -c500 on /read: the queue, as `ss -lt` shows
# it, took that long to drain; p99 5.7 s). So a worker takes its share of what
# is waiting: the queue's length divided by the workers sharing the socket,
# rounded up, between 1 and ACCEPT_MAX (accept_budget). Where the queue's
# length cannot be read (unix sockets, non-Linux) it takes ACCEPT_BATCH.
ACCEPT_BATCH = 1
ACCEPT_MAX = 64

# struct tcp_info (linux/tcp.h): eight one-byte fields, then u32 rto, ato,
# snd_mss, rcv_mss, unacked. For a listening socket the kernel reports the
# accept queue's current length in tcpi_unacked (what `ss -lt` shows as Recv-Q).
_TCP_INFO_UNACKED = struct.Struct("=I")
_TCP_INFO_UNACKED_OFFSET = 24
_TCP_INFO_SIZE = 104


def pending_connections(sock: socket.socket) -> int | None:
    """Connections waiting in a TCP listening socket's accept queue, or None
    where the platform or socket family does not tell."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:  # closed meanwhile, or a kernel without tcp_info
        return None
    if len(info) < _TCP_INFO_UNACKED_OFFSET + _TCP_INFO_UNACKED.size:
        return None
    return int(_TCP_INFO_UNACKED.unpack_from(info, _TCP_INFO_UNACKED_OFFSET)[0])


def accept_budget(sock: socket.socket, shared_by: int) -> int:
    """How many connections to accept now: this worker's share of the queue
    (see ACCEPT_BATCH above)."""
    pending = pending_connections(sock)
    if pending is None:
        return ACCEPT_BATCH
    share = -(-pending // max(1, shared_by))  # ceil
    return max(1, min(ACCEPT_MAX, share))


def has_unread_bytes(sock: Any) -> bool:
    """True when bytes wait in the socket's receive queue (FIONREAD; no read, no
    wait). The drain checks it just before it closes an "idle" keep-alive
    connection: a request that has already arrived there, but that the server
    has not read yet, would otherwise be cut off unanswered, and nginx cannot
    pass a cut-off POST on to another worker (502)."""
    if sock is None:  # already closed (Tornado drops a closed stream's socket)
        return False
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf, True)
        return buf[0] > 0
    except (OSError, ValueError):  # closed meanwhile: nothing to protect
        return False

"""What the pool needs to know about PyMySQL connections, and nothing of Django.

* ``PooledConnection``: a PyMySQL connection that reuses one TLS context per
  set of SSL options (PyMySQL 1.2 builds a new one, loading the CA bundle, on
  every connect: ~28 ms of CPU here, blocking the gevent hub) and that knows
  whether a command was interrupted half-way.
* ``check``/``ping``: is an idle connection still alive (one round trip)?
* ``make_reset``: make a returned connection clean for its next user.
"""

from __future__ import annotations

import logging
import ssl
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pymysql
from pymysql.constants import SERVER_STATUS

logger = logging.getLogger("greenpool")

# The protocol's command byte; PyMySQL names no constant for it.
_COM_RESET_CONNECTION = 0x1F

_ssl_contexts: dict[tuple, ssl.SSLContext] = {}
_ssl_lock = threading.Lock()


def _ssl_key(sslp: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in sslp.items()))


class PooledConnection(pymysql.connections.Connection):
    """A PyMySQL connection fit for a pool.

    ``greenpool_busy`` is True from the moment a command is sent until its
    answer has been read. A holder killed in between (gevent.Timeout,
    GreenletExit) leaves it True: the connection is mid-protocol and must be
    discarded, never reused (PyMySQL#275: "Packet sequence number wrong").
    """

    greenpool_busy = False
    # Set by the Django backend once its session set-up ran on this
    # connection; cleared when a session reset undoes that set-up.
    greenpool_initialized = False
    # True once a session reset undid what PyMySQL set up at connect
    # (init_command), so the backend must run that again.
    greenpool_was_reset = False

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        if not isinstance(sslp, dict):
            return super()._create_ssl_ctx(sslp)
        key = _ssl_key(sslp)
        ctx = _ssl_contexts.get(key)
        if ctx is None:
            # Contexts are immutable once made and safe to share between
            # connections; the lock keeps two threads from both building one.
            with _ssl_lock:
                ctx = _ssl_contexts.get(key)
                if ctx is None:
                    ctx = super()._create_ssl_ctx(sslp)
                    _ssl_contexts[key] = ctx
        return ctx

    @contextmanager
    def _command(self) -> Iterator[None]:
        """Mark the connection busy for one command. An Exception (an error
        packet from the server, or a socket error after which PyMySQL closed
        the connection) leaves the protocol in a known state; only a
        BaseException that interrupts the read leaves the mark set."""
        self.greenpool_busy = True
        try:
            yield
        except Exception:
            self.greenpool_busy = False
            raise
        self.greenpool_busy = False

    def query(self, sql: Any, unbuffered: bool = False) -> int:
        with self._command():
            return super().query(sql, unbuffered)

    def next_result(self, unbuffered: bool = False) -> int:
        with self._command():
            return super().next_result(unbuffered)

    def commit(self) -> None:
        with self._command():
            super().commit()

    def rollback(self) -> None:
        with self._command():
            super().rollback()

    def ping(self, reconnect: bool = False) -> None:
        # Never reconnect behind the pool's back: a pooled connection that
        # died is replaced by the pool, which counts it.
        with self._command():
            super().ping(reconnect=False)

    def reset_session(self) -> None:
        """COM_RESET_CONNECTION: drop user variables, temporary tables, session
        variables, locks and any transaction, keeping the login (MySQL 5.7.3+,
        MariaDB 10.2.4+). One round trip."""
        with self._command():
            self._execute_command(_COM_RESET_CONNECTION, b"")
            self._read_ok_packet()
        self.greenpool_initialized = False
        self.greenpool_was_reset = True

    def __repr__(self) -> str:
        # Never the password: only where it points and its server thread id.
        state = "open" if self.open else "closed"
        return f"<PooledConnection {self.user}@{self.host}:{self.port} id={self.thread_id() if self.open else None} {state}>"


def connect_factory(params: dict[str, Any]) -> Callable[[], PooledConnection]:
    """Return ``connect()`` for a pool: one PooledConnection per call, with
    parameters fixed once (the SSL context is shared through the cache)."""
    frozen = dict(params)

    def connect() -> PooledConnection:
        return PooledConnection(**frozen)

    return connect


def in_transaction(conn: PooledConnection) -> bool:
    """True when the server said a transaction is open (free: read from the
    status flags of the last reply, no round trip)."""
    return bool(conn.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)


def check(conn: PooledConnection) -> None:
    """Raise if the connection is dead: one COM_PING round trip."""
    if not conn.open:
        raise pymysql.err.OperationalError(2006, "connection is closed")
    conn.ping(reconnect=False)


def make_reset(reset_session: bool) -> Callable[[PooledConnection], None]:
    """Return the checkin hook. Raising from it makes the pool discard the
    connection, so every doubt ends in a discard, never in a reuse."""

    def reset(conn: PooledConnection) -> None:
        if not conn.open:
            raise pymysql.err.OperationalError(2006, "connection was closed while checked out")
        if conn.greenpool_busy:
            raise pymysql.err.InternalError("connection was interrupted mid-command; its protocol state is unknown")
        if reset_session:
            conn.reset_session()  # also ends any transaction
        elif in_transaction(conn):
            conn.rollback()
        if not conn.get_autocommit():
            conn.autocommit(True)

    return reset

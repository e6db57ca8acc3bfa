"""What the pool needs to know about PyMySQL connections, and nothing of Django.

* ``PooledConnection``: a PyMySQL connection that reuses one TLS context per
  set of SSL options (PyMySQL 1.2 builds a new one, loading the CA bundle, on
  every connect: ~28 ms of CPU here, blocking the gevent hub) and that knows
  whether a command was interrupted half-way.
* ``reply_wait``: under gevent, wait a moment for a statement's reply before
  yielding to the hub (see ``PooledConnection._await_reply``).
* the first command of a checkout that cannot be sent (the session was gone
  before it) is sent once more on a new session (``ConnectionState.on_unsent``).
* ``check``/``ping``: is an idle connection still alive (one round trip)?
* ``make_reset``: make a returned connection clean for its next user.

Session reset modes (``reset_session``), measured in bench/reset_cost.py:

* ``True``: COM_RESET_CONNECTION at every checkin (a round trip, plus Django's
  session set-up again at the next checkout).
* ``"auto"``: reset only a connection whose session changed. The server says
  so: with CLIENT_SESSION_TRACK and ``session_track_state_change=ON`` it sets
  SERVER_SESSION_STATE_CHANGED in the reply to any statement that changed
  session state (user or session variables, temporary tables, prepared
  statements, the current schema). Two changes it does not report are caught
  from the statement text: named locks (GET_LOCK) and user variables assigned
  inside a SELECT (``:=``, ``INTO @var``). A request that changed nothing costs nothing.
* ``False``: only roll back an open transaction.
"""

from __future__ import annotations

import logging
import re
import select
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pymysql
from pymysql.constants import CLIENT, COMMAND, CR, SERVER_STATUS

from greenpool import _compat

logger = logging.getLogger("greenpool")

# Protocol constants PyMySQL names none for.
_COM_RESET_CONNECTION = 0x1F
_SERVER_SESSION_STATE_CHANGED = 0x4000
_CLIENT_SESSION_TRACK = getattr(CLIENT, "SESSION_TRACK", 1 << 23)

# Session state the server's tracker does not report (see module docstring).
_UNTRACKED_STATE = re.compile(r"get_lock|:=|into\s*@", re.IGNORECASE)

RESET_MODES = (True, "auto", False)

# reply_wait: after this many replies in a row that took longer than the
# wait, a connection waits only for one statement in this many.
_REPLY_MISSES_BEFORE_PAUSE = 3
_REPLY_RETRY_EVERY = 16

# TCP keepalive on every pooled TCP connection (PyMySQL turns SO_KEEPALIVE on
# with the kernel's two-hour default): probes after a minute idle keep NAT and
# load-balancer state alive, whose idle cuts are 4-10 minutes, and find a server
# host that vanished without a FIN in idle + interval x count seconds.
TCP_KEEPALIVE_IDLE = 60
TCP_KEEPALIVE_INTERVAL = 10
TCP_KEEPALIVE_COUNT = 3

_ssl_contexts: dict[tuple, ssl.SSLContext] = {}
_ssl_lock = threading.Lock()


def _ssl_key(sslp: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in sslp.items()))


class ConnectionState:
    """What greenpool knows about one pooled connection, in one place
    (``conn.greenpool``). The protocol fields are kept by PooledConnection
    itself; the lease fields by the Django backend, at checkout and checkin."""

    __slots__ = (
        "busy",
        "initialized",
        "was_reset",
        "track_state",
        "dirty",
        "resets",
        "reply_wait",
        "reply_misses",
        "reply_skipped",
        "watch",
        "on_unsent",
        "pool",
        "checked_out_at",
        "condemned",
    )

    def __init__(self) -> None:
        # True from the moment a command is sent until its answer has been
        # read. A holder killed in between (gevent.Timeout, GreenletExit)
        # leaves it True: the connection is mid-protocol and must be
        # discarded, never reused (PyMySQL#275: "Packet sequence number wrong").
        self.busy = False
        # The Django backend's session set-up ran on this session; a session
        # reset undoes it (and PyMySQL's init_command: was_reset).
        self.initialized = False
        self.was_reset = False
        # reset_session "auto": the server reports session-state changes, and
        # dirty records that one happened since the last baseline.
        self.track_state = False
        self.dirty = False
        self.resets = 0
        # Under gevent: seconds to wait for a statement's reply without
        # yielding to the hub (0: yield at once, as a plain gevent socket does).
        self.reply_wait = 0.0
        self.reply_misses = 0  # replies in a row that took longer
        self.reply_skipped = 0  # statements sent without the wait while they do
        self.watch: tuple[Any, Any] | None = None  # (socket, poll object reading it): _readable_within
        # Armed by the backend once a checkout is ready, taken by the next
        # command: called with the error when that command could not be sent
        # at all (the session was gone before it), to give the connection a
        # new session on which the command is sent once more. Nothing else is
        # ever resent.
        self.on_unsent: Callable[[PooledConnection, Exception], None] | None = None
        # The lease: the pool it is checked out from, since when
        # (time.monotonic(), the hold time's start), and why it must not be
        # reused (Django judged it unusable), or None.
        self.pool: Any = None
        self.checked_out_at = 0.0
        self.condemned: str | None = None


class PooledConnection(pymysql.connections.Connection):
    """A PyMySQL connection fit for a pool; its state is ``conn.greenpool``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.greenpool = ConnectionState()  # before PyMySQL connects
        super().__init__(*args, **kwargs)

    def connect(self, sock: Any = None) -> None:
        super().connect(sock)
        if self._sock is not None and self._sock.family in (socket.AF_INET, socket.AF_INET6):
            for option, value in (
                (socket.TCP_KEEPIDLE, TCP_KEEPALIVE_IDLE),
                (socket.TCP_KEEPINTVL, TCP_KEEPALIVE_INTERVAL),
                (socket.TCP_KEEPCNT, TCP_KEEPALIVE_COUNT),
            ):
                self._sock.setsockopt(socket.IPPROTO_TCP, option, value)

    def reopen(self) -> None:
        """A new server session on this object, as fresh as a new connection
        (PyMySQL's connect again: login, init_command, autocommit mode)."""
        self.connect()
        state = self.greenpool
        state.busy = state.initialized = state.was_reset = False
        state.reply_misses = state.reply_skipped = 0
        if state.track_state:
            try:
                self.start_tracking_state()
            except BaseException:
                self.close()
                raise

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
        """Mark the connection busy for one command. PyMySQL's own errors (an
        error packet from the server, or a socket error after which PyMySQL
        closed the connection) leave the protocol in a known state; anything
        else that interrupts the read (gevent.Timeout, GreenletExit, Celery's
        SoftTimeLimitExceeded raised by a signal handler) leaves the mark set.
        A command on a connection left so fails before it is sent."""
        self._refuse_if_interrupted()
        state = self.greenpool
        state.busy = True
        try:
            yield
        except pymysql.err.MySQLError:
            state.busy = False
            raise
        state.busy = False

    def _refuse_if_interrupted(self) -> None:
        # Its socket may still hold the rest of the interrupted reply: a new
        # command would read that as its own answer.
        if self.greenpool.busy:
            raise pymysql.err.InterfaceError(0, "connection was interrupted mid-command; its protocol state is unknown")

    def query(self, sql: Any, unbuffered: bool = False) -> int:
        # The hot path: the busy mark is inlined rather than taken through
        # _command(), whose generator costs a few microseconds per query.
        state = self.greenpool
        if state.busy:
            self._refuse_if_interrupted()
        state.busy = True
        try:
            result = super().query(sql, unbuffered)
        except pymysql.err.MySQLError:
            state.busy = False
            raise
        state.busy = False
        # Only statements count, not autocommit toggles or COMMIT/ROLLBACK
        # (PyMySQL sends those without query()): a transaction is state the
        # checkin already handles by rolling back, and needs no reset.
        if state.track_state and not state.dirty:
            # The flag is read from this statement's OK packet only: PyMySQL
            # keeps conn.server_status from the last OK packet, stale after a
            # result set (whose own status is None here).
            status = self._result.server_status if self._result is not None else None
            if (status or 0) & _SERVER_SESSION_STATE_CHANGED or _UNTRACKED_STATE.search(
                sql if isinstance(sql, str) else sql.decode("utf-8", "replace")
            ):
                state.dirty = True
        return result

    def _execute_command(self, command: int, sql: Any) -> None:
        state = self.greenpool
        on_unsent = state.on_unsent
        if on_unsent is None:
            super()._execute_command(command, sql)
        else:
            state.on_unsent = None
            try:
                super()._execute_command(command, sql)
            except pymysql.err.OperationalError as exc:
                # 2006 here comes from the write: the command never reached a
                # server (a packet is only run once whole). A failed read is
                # 2013, and that command may have run: never resent.
                if exc.args[0] != CR.CR_SERVER_GONE_ERROR:
                    raise
                on_unsent(self, exc)
                super()._execute_command(command, sql)
        if state.reply_wait:
            self._await_reply(state)

    def _await_reply(self, state: ConnectionState) -> None:
        """Wait up to ``reply_wait`` for the reply to the command just
        sent, blocking the whole worker, instead of yielding to the hub.

        A gevent socket read that finds nothing yet parks the greenlet, and it
        runs again only once the hub has run every greenlet that became ready
        before it: tens of ms in a busy worker (bench/tail_anatomy.py: "resume"
        p50 8.4 ms), while the reply of a primary-key read from a server on the
        same host comes within 0.1 ms (docs/tuning.md). All that time the request holds
        its pool connection, so other requests queue for the pool behind it.
        Waiting for the reply instead costs the worker at most this much per
        statement, and nothing when the reply is already there. A connection
        whose replies keep taking longer (a server far away, slow statements)
        stops waiting after a few misses and tries again every so often."""
        if state.reply_misses >= _REPLY_MISSES_BEFORE_PAUSE:
            state.reply_skipped += 1
            if state.reply_skipped % _REPLY_RETRY_EVERY:
                return
        ready = self._readable_within(state.reply_wait * 1000.0)
        if ready:
            state.reply_misses = 0
            state.reply_skipped = 0
        elif ready is not None:
            state.reply_misses += 1

    def _readable_within(self, timeout_ms: float) -> bool | None:
        """Whether the socket has something to read (or has been closed) within
        ``timeout_ms``, by the real poll(), which never goes through a hub; None
        without a socket. poll(), not select(): select() refuses descriptors from
        1024 up, and a gevent worker with a thousand clients opens its
        connections there. One poll object per socket, kept: making and
        registering one per call cost more than the poll itself."""
        sock = self._sock
        if sock is None:
            return None
        watch = self.greenpool.watch
        if watch is None or watch[0] is not sock:
            poller = _compat.real_poll()()
            poller.register(sock.fileno(), select.POLLIN)
            watch = self.greenpool.watch = (sock, poller)
        return bool(watch[1].poll(timeout_ms))

    def start_tracking_state(self) -> None:
        """Turn the server's session-state tracker on for this session and take
        the current state as the clean baseline. One round trip, once per
        physical connection (and again after each reset)."""
        self.greenpool.track_state = True
        with self._command():
            self._execute_command(COMMAND.COM_QUERY, b"SET SESSION session_track_state_change = ON")
            self._read_ok_packet()
        self.greenpool.dirty = False

    def mark_clean(self) -> None:
        """What the session holds now is the baseline (e.g. Django's set-up)."""
        self.greenpool.dirty = False

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
        self.greenpool.initialized = False
        self.greenpool.was_reset = True
        self.greenpool.resets += 1
        if self.greenpool.track_state:
            self.start_tracking_state()

    def __repr__(self) -> str:
        # Never the password: only where it points and its server thread id.
        state = "open" if self.open else "closed"
        user = self.user.decode("utf-8", "replace") if isinstance(self.user, bytes) else self.user
        return f"<PooledConnection {user}@{self.host}:{self.port} id={self.thread_id() if self.open else None} {state}>"


def connect_factory(
    params: dict[str, Any], track_state: bool = False, reply_wait: float = 0.0
) -> Callable[[], PooledConnection]:
    """Return ``connect()`` for a pool: one PooledConnection per call, with
    parameters fixed once (the SSL context is shared through the cache).
    ``track_state`` asks the server to report session-state changes, for
    reset_session="auto". ``reply_wait`` (seconds) applies where gevent has
    patched the socket module; elsewhere a read blocks its own thread anyway."""
    frozen = dict(params)
    if track_state:
        frozen["client_flag"] = frozen.get("client_flag", 0) | _CLIENT_SESSION_TRACK

    def connect() -> PooledConnection:
        conn = PooledConnection(**frozen)
        if reply_wait and _compat.socket_patched():
            conn.greenpool.reply_wait = reply_wait
        if track_state:
            try:
                conn.start_tracking_state()
            except BaseException:
                conn.close()
                raise
        return conn

    return connect


def in_transaction(conn: PooledConnection) -> bool:
    """True when the server said a transaction is open (free: read from the
    status flags of the last reply, no round trip)."""
    return bool(conn.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)


def looks_dead(conn: PooledConnection) -> bool:
    """A local look, no round trip (under 1 µs): an idle connection has nothing to
    read, so a readable socket means the server closed it (EOF) or sent an
    error (KILL, shutdown), or the network reset it. The pool's checkout probe."""
    return conn._readable_within(0) is not False


def check(conn: PooledConnection) -> None:
    """Raise if the connection is dead: one COM_PING round trip."""
    if not conn.open:
        raise pymysql.err.OperationalError(2006, "connection is closed")
    conn.ping(reconnect=False)


def make_reset(reset_session: bool | str) -> Callable[[PooledConnection], None]:
    """Return the checkin hook for a reset mode (True, "auto", False).
    Raising from it makes the pool discard the connection, so every doubt
    ends in a discard, never in a reuse."""
    if reset_session not in RESET_MODES:
        raise ValueError(f"reset_session must be one of {RESET_MODES}, got {reset_session!r}")

    def reset(conn: PooledConnection) -> None:
        if not conn.open:
            raise pymysql.err.OperationalError(2006, "connection was closed while checked out")
        if conn.greenpool.busy:
            raise pymysql.err.InternalError("connection was interrupted mid-command; its protocol state is unknown")
        if reset_session is True or (reset_session == "auto" and conn.greenpool.dirty):
            conn.reset_session()  # also ends any transaction
            return
        # PyMySQL updates the status flags from OK packets only, so a
        # transaction begun implicitly by a SELECT with autocommit off is not
        # flagged: autocommit off means "may be in a transaction". Roll back
        # before turning autocommit on, which would otherwise COMMIT it.
        if in_transaction(conn) or not conn.get_autocommit():
            conn.rollback()
        if not conn.get_autocommit():
            conn.autocommit(True)

    return reset

"""A bounded connection pool for greenlets and threads.

The pool knows nothing of Django or MySQL: it takes a ``connect()`` callable and
optional ``check`` (is this idle connection still alive?) and ``reset`` (make a
returned connection clean for the next user) hooks.

Three objects, as in SQLAlchemy's pool:

* ``Pool`` is the policy: how many connections, who waits, in which order.
* ``_Record`` is one connection's life: when it was made, last used, expires.
* a waiter (greenpool._compat) is one request queued for a connection.

The size cap is a count of *slots*, taken under the lock before ``connect()``
runs and given back only when a connection is discarded: a connect that yields
to other greenlets half-way cannot let a second one past the cap.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from greenpool import _compat, _fork
from greenpool.errors import PoolClosed, PoolError, PoolTimeout, TooManyRequests
from greenpool.metrics import WAIT_BUCKETS, Histogram
from greenpool.pool_options import DEFAULTS, OPTIONS, validate

logger = logging.getLogger("greenpool")

# Handed to a waiter instead of a connection: "a slot is yours, connect".
_SLOT = object()
# getconn's marker for "served on the fast path".
_FAST = object()


class _Record:
    """One pooled connection and the facts of its life."""

    __slots__ = ("conn", "created_at", "expires_at", "last_used", "last_alive", "checked_out_at", "stack")

    def __init__(self, conn: Any, max_lifetime: float) -> None:
        self.conn = conn
        self.start_session(max_lifetime)
        self.last_used = self.created_at  # last returned by a request: max_idle counts from here
        self.checked_out_at = 0.0
        self.stack: str | None = None

    def start_session(self, max_lifetime: float) -> None:
        """The connection has a new server session: its life starts now."""
        now = time.monotonic()
        self.created_at = now
        # Jitter (up to -5 %) spreads the replacements of connections made
        # together, e.g. at start-up, so they do not all expire in one instant.
        self.expires_at = now + max_lifetime * (1.0 - 0.05 * random.random())
        self.last_alive = now  # last known alive (used or pinged): checks count from here

    # -- its life's rules, in one place ---------------------------------------

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def why_retire(self, now: float, max_idle: float, may_shrink: bool) -> str | None:
        """Why this idle connection must be closed now, or None: past its
        lifetime, or unused for max_idle while the pool ``may_shrink`` (holds
        more than min_size)."""
        if self.expired(now):
            return "max_lifetime reached"
        if may_shrink and now - self.last_used > max_idle:
            return "max_idle reached"
        return None

    def alive_within(self, seconds: float, now: float) -> bool:
        """Used or pinged in the last ``seconds``."""
        return now - self.last_alive <= seconds


_STAT_KEYS = (
    "requests_num",  # checkouts served
    "requests_queued",  # checkouts that had to wait
    "requests_wait_ms",  # total time spent waiting, ms
    "requests_timeouts",  # PoolTimeout raised
    "requests_errors",  # TooManyRequests raised
    "returns_bad",  # connections discarded at checkin (reset failed, holder killed)
    "connections_num",  # connects attempted successfully
    "connections_ms",  # total time spent connecting, ms
    "connections_errors",  # connects that raised
    "connections_lost",  # found dead by the checkout check
    "connections_recycled",  # closed for max_lifetime or max_idle
    "checks_skipped",  # checkout checks skipped: used within check_window
    "keepalive_num",  # keepalive pings sent
    "keepalive_lost",  # keepalive pings that found a dead connection (replaced in the background)
    "leaks_reported",  # connections held past leak_threshold
)

# Pools alive in this process, so a forked child can disown its parent's.
_all_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


class Pool:
    """A bounded pool of connections made by ``connect()``.

    ``getconn()``/``putconn()`` or ``with pool.connection() as conn:``. Requests
    that find no free connection wait in FIFO order up to ``timeout`` seconds.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        # The options: defaults, rules and help in greenpool/pool_options.py.
        min_size: int = DEFAULTS["min_size"],
        max_size: int = DEFAULTS["max_size"],
        timeout: float = DEFAULTS["timeout"],
        max_waiting: int = DEFAULTS["max_waiting"],
        max_lifetime: float = DEFAULTS["max_lifetime"],
        max_idle: float = DEFAULTS["max_idle"],
        check_window: float = DEFAULTS["check_window"],
        keepalive: float | None = DEFAULTS["keepalive"],
        leak_threshold: float | None = DEFAULTS["leak_threshold"],
        reconnect_backoff: float = DEFAULTS["reconnect_backoff"],
        reconnect_backoff_max: float = DEFAULTS["reconnect_backoff_max"],
        metrics: bool = DEFAULTS["metrics"],
        # Naming, concurrency and the hooks: what the pool's user wires in.
        name: str | None = None,
        concurrency: str = "auto",
        open: bool = False,
        check: Callable[[Any], None] | None = None,
        probe: Callable[[Any], bool] | None = None,
        reset: Callable[[Any], None] | None = None,
        reconnect: Callable[[Any], None] | None = None,
        close_conn: Callable[[Any], None] | None = None,
        ping: Callable[[Any], None] | None = None,
        retry_connect: Callable[[BaseException], bool] | None = None,
    ) -> None:
        arguments = locals()
        validate({option: arguments[option] for option in OPTIONS})
        _require(callable(connect), "connect", connect, "a callable")
        for hook_name, hook in (
            ("check", check),
            ("reset", reset),
            ("reconnect", reconnect),
            ("close_conn", close_conn),
            ("ping", ping),
            ("retry_connect", retry_connect),
            ("probe", probe),
        ):
            _require(hook is None or callable(hook), hook_name, hook, "None or a callable")
        try:
            mode = _compat.resolve_mode(concurrency)
        except ValueError as exc:
            raise ValueError(f"invalid pool option concurrency={concurrency!r}: {exc}") from None

        self.name = name or f"pool-{id(self):x}"
        self.min_size = min_size
        self.max_size = max_size
        self.timeout = float(timeout)
        self.max_waiting = max_waiting
        self.max_lifetime = float(max_lifetime)
        self.max_idle = float(max_idle)
        self.check_window = float(check_window)
        self.keepalive = keepalive
        self.leak_threshold = leak_threshold
        self.reconnect_backoff = reconnect_backoff
        self.reconnect_backoff_max = reconnect_backoff_max
        self._connect = connect
        self._check = check
        self._reset = reset
        # Opens a new session on the same connection object (see reopen()).
        self._reconnect = reconnect
        self._close_conn = close_conn
        self._ping = ping or check
        # A local, no-round-trip look (e.g. "is the idle socket readable?") at
        # every checkout, with or without ``check``: a connection it calls
        # dead is pinged when there is a check (even within check_window),
        # and replaced unseen when there is none.
        self._probe = probe
        # Which connect errors mean "the server is away for now": a request
        # that meets one keeps retrying (with back-off) until its timeout,
        # so a short outage costs latency instead of errors.
        self._retry_connect = retry_connect

        self._prims = _compat.Primitives(mode)
        self._lock = self._prims.Lock()
        self._idle: deque[_Record] = deque()  # right end = most recently used
        self._out: dict[int, _Record] = {}  # id(conn) -> record, checked out
        self._waiting: deque[Any] = deque()  # _compat waiters, FIFO
        self._slots = 0  # connections open or being opened: never > max_size
        self._stats = dict.fromkeys(_STAT_KEYS, 0)
        # Seconds each checkout waited (greenpool.metrics); never reset, as Prometheus expects.
        self._wait = Histogram(WAIT_BUCKETS) if metrics else None
        self._opened = False
        self._closed = False
        self._pid = _fork.pid()  # the process that made it: a forked child disowns it
        self._maintenance: Any = None
        # Wakes the maintenance task early: on close, and when keepalive changes.
        self._wake = self._prims.Event()
        _all_pools.add(self)
        if open:
            self.open()

    # -- life cycle -------------------------------------------------------

    @property
    def mode(self) -> str:
        return self._prims.mode

    @property
    def closed(self) -> bool:
        return self._closed

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Start the pool: fill to min_size in the background (or, with
        ``wait``, before returning) and start the maintenance task."""
        self._refuse_if_forked()
        with self._lock:
            if self._closed:
                raise PoolClosed(f"pool {self.name!r} is closed and cannot be reopened")
            if self._opened:
                return
            self._opened = True
        self._maintenance = self._prims.spawn_background(f"greenpool-maintenance[{self.name}]", self._maintain_loop)
        if wait:
            self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> None:
        """Open connections until min_size are open; raise PoolTimeout if that
        takes longer than ``timeout`` (the last connect error is chained).
        Counts connections actually made, not slots: a background connect
        that holds a slot may yet fail."""
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            with self._lock:
                opened = len(self._idle) + len(self._out)
            if opened >= self.min_size or self._closed:
                return
            try:
                if not self._fill_one():
                    # Every slot is taken, some by connects in progress
                    # elsewhere (the maintenance task): let them finish.
                    self._prims.sleep(0.02)
            except Exception as exc:
                last_error = exc
                self._prims.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                detail = f": {last_error}" if last_error is not None else ""
                raise PoolTimeout(
                    f"pool {self.name!r} could not open min_size={self.min_size} connections "
                    f"within {timeout:.1f}s{detail}"
                ) from last_error

    def close(self, timeout: float = 5.0) -> None:
        """Close idle connections now, stop the maintenance task, and make
        every waiter and later caller get PoolClosed. Connections still checked
        out are closed when they come back."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle = list(self._idle)
            self._idle.clear()
            self._slots -= len(idle)
            waiters = list(self._waiting)
            self._waiting.clear()
        self._wake.set()
        for waiter in waiters:
            waiter.give(None)
        for record in idle:
            self._close_quietly(record.conn, "pool closed")
        if self._maintenance is not None:
            if not self._prims.join(self._maintenance, timeout):
                logger.warning("pool %r: maintenance task did not stop within %.1fs", self.name, timeout)
            self._maintenance = None

    def __enter__(self) -> Pool:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} {self.mode} size={self._slots}/{self.max_size} "
            f"idle={len(self._idle)} in_use={len(self._out)} waiting={len(self._waiting)}"
            f"{' closed' if self._closed else ''}>"
        )

    # -- checkout / checkin -----------------------------------------------

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[Any]:
        """Check a connection out for the ``with`` block.

        If the block is interrupted by a BaseException that is not an
        Exception (gevent.Timeout, GreenletExit, KeyboardInterrupt) the
        connection may be mid-protocol, so it is discarded, never reused.
        """
        conn = self.getconn(timeout)
        try:
            yield conn
        except Exception:
            self.putconn(conn)
            raise
        except BaseException:
            self.putconn(conn, discard=True)
            raise
        else:
            self.putconn(conn)

    def getconn(self, timeout: float | None = None) -> Any:
        """Check out a connection, waiting up to ``timeout`` (default: the
        pool's) for one to be free. Raises PoolTimeout, TooManyRequests or
        PoolClosed."""
        if self._pid != _fork.pid():
            self._refuse_if_forked()
        if not self._opened and not self._closed:
            self.open()
        started = time.monotonic()
        waiter: Any = None
        record: Any = None  # an idle _Record, or _SLOT: connect in a reserved slot
        with self._lock:
            if self._closed:
                raise PoolClosed(f"pool {self.name!r} is closed")
            if self._idle:
                record = self._idle.pop()  # LIFO: see _run_housekeeping
                if self._ready(record, started):
                    # The fast path: one lock section for the whole checkout.
                    self._out[id(record.conn)] = record
                    record.checked_out_at = started
                    self._stats["requests_num"] += 1
                    if self._wait is not None:
                        self._wait.counts[0] += 1  # waited 0 s: the first bucket
                    waiter = _FAST
            elif self._slots < self.max_size:
                self._slots += 1
                record = _SLOT
            else:
                if self.max_waiting and len(self._waiting) >= self.max_waiting:
                    self._stats["requests_errors"] += 1
                    raise TooManyRequests(
                        f"pool {self.name!r}: {len(self._waiting)} requests already waiting "
                        f"(max_waiting={self.max_waiting}, max_size={self.max_size})"
                    )
                waiter = self._prims.Waiter()
                self._waiting.append(waiter)
                self._stats["requests_queued"] += 1
        if waiter is _FAST:
            if self.leak_threshold is not None:
                record.stack = _caller_stack()
            return record.conn
        if waiter is not None:
            record = self._wait_for(waiter, timeout if timeout is not None else self.timeout, started)
        return self._hand_out(record, started, timeout if timeout is not None else self.timeout)

    def _ready(self, record: _Record, now: float) -> bool:
        """True when an idle record may be handed out as it is: not expired,
        not idle too long, not found dead by the probe, and, with checks on,
        known alive a moment ago. Called under the lock; counts the checks it
        skips."""
        if record.why_retire(now, self.max_idle, self._slots > self.min_size) or self._suspect(record):
            return False
        if self._check is None:
            return True
        if record.alive_within(self.check_window, now):
            # Used or pinged a moment ago: a ping would cost a round trip to
            # learn what we know (HikariCP skips its alive-check the same way).
            self._stats["checks_skipped"] += 1
            return True
        return False

    def _suspect(self, record: _Record) -> bool:
        """The probe's verdict; a probe that fails counts as suspect."""
        if self._probe is None:
            return False
        try:
            return bool(self._probe(record.conn))
        except Exception as exc:
            # Logged: a probe that always fails turns every checkout into a
            # ping (or, without a check, a reconnect), and nothing else would
            # show why (it once raised on every descriptor from 1024 up).
            logger.debug(
                "pool %r: checkout probe failed, treating the connection as suspect: %s: %s",
                self.name,
                type(exc).__name__,
                exc,
            )
            return True

    def putconn(self, conn: Any, discard: bool = False) -> None:
        """Return a connection. ``discard`` closes it instead of reusing it
        (its holder was interrupted, or it is in an unknown state)."""
        if self._pid != _fork.pid():
            # Checked out in the parent before the fork: the parent's session.
            # Dropped without a word to the server, as the idle ones were.
            return
        # A single dict pop is atomic (GIL; and greenlets do not preempt), so
        # no lock: a double return finds nothing the second time.
        record = self._out.pop(id(conn), None)
        if record is None or record.conn is not conn:
            if record is not None:  # another connection reused the id: put it back
                self._out[id(conn)] = record
            raise PoolError(
                f"pool {self.name!r}: putconn of a connection this pool does not have checked out: {conn!r}"
            )
        if self.leak_threshold is not None:
            held = time.monotonic() - record.checked_out_at
            if held > self.leak_threshold:
                logger.warning(
                    "pool %r: connection returned after %.1fs (leak_threshold=%.1fs)",
                    self.name,
                    held,
                    self.leak_threshold,
                )
            record.stack = None
        if discard:
            self._count("returns_bad")
            self._discard(record, "discarded at checkin")
            return
        if self._reset is not None and not self._closed:
            try:
                self._reset(conn)
            except Exception as exc:
                self._count("returns_bad")
                # Expected when the server already dropped it: INFO then.
                level = logging.INFO if getattr(conn, "open", True) is False else logging.WARNING
                logger.log(level, "pool %r: reset failed, discarding the connection: %s", self.name, exc)
                self._discard(record, "reset failed")
                return
            except BaseException:
                # Interrupted mid-reset (a gevent.Timeout around the request,
                # GreenletExit at a worker's stop): the record is already out of
                # _out, so without this its slot would be gone for good, and the
                # connection's protocol state is unknown.
                self._count("returns_bad")
                self._discard(record, "reset interrupted")
                raise
        now = time.monotonic()
        if record.expired(now) and not self._closed:
            self._count("connections_recycled")
            self._discard(record, "max_lifetime reached")
            return
        record.last_used = record.last_alive = now
        self._give_back(record)

    def reopen(self, conn: Any) -> None:
        """Give a checked-out connection a new session in place, with the
        ``reconnect`` hook: for a holder that found its session gone before it
        had sent anything. Same object and slot, so the cap holds and every
        reference to the connection stays valid; counted as a connection lost
        and one made."""
        record = self._out.get(id(conn))
        if record is None or record.conn is not conn:
            raise PoolError(f"pool {self.name!r}: reopen of a connection this pool does not have checked out: {conn!r}")
        if self._reconnect is None:
            raise PoolError(f"pool {self.name!r} has no reconnect hook: it cannot reopen {conn!r}")
        self._count("connections_lost")
        started = time.monotonic()
        try:
            self._reconnect(conn)
        except Exception:
            self._count("connections_errors")
            raise
        record.start_session(self.max_lifetime)
        with self._lock:
            self._stats["connections_num"] += 1
            self._stats["connections_ms"] += int((record.created_at - started) * 1000)

    # -- stats ------------------------------------------------------------

    def get_stats(self) -> dict[str, int]:
        """Counters since the last pop_stats(), plus the pool's current shape."""
        with self._lock:
            return self._stats_snapshot()

    def pop_stats(self) -> dict[str, int]:
        """Like get_stats(), and reset the counters to zero."""
        with self._lock:
            stats = self._stats_snapshot()
            self._stats = dict.fromkeys(_STAT_KEYS, 0)
        return stats

    def _stats_snapshot(self) -> dict[str, int]:
        stats = {
            "pool_min": self.min_size,
            "pool_max": self.max_size,
            "pool_size": self._slots,
            "pool_available": len(self._idle),
            "pool_in_use": len(self._out),
            "requests_waiting": len(self._waiting),
        }
        stats.update(self._stats)
        return stats

    @property
    def metrics(self) -> bool:
        """Whether the pool records the histograms of /metrics (its ``metrics`` option)."""
        return self._wait is not None

    def wait_histogram(self) -> dict[str, Any] | None:
        """Seconds each checkout waited, by bucket (greenpool.metrics), since the
        pool was made (pop_stats() does not reset it); None with metrics off."""
        if self._wait is None:
            return None
        with self._lock:
            return self._wait.snapshot()

    def _count(self, key: str, n: int = 1) -> None:
        """Add to a counter outside the hot path's lock sections."""
        with self._lock:
            self._stats[key] += n

    def set_keepalive(self, seconds: float | None) -> None:
        """Change the keepalive interval (e.g. once the server's wait_timeout
        is known) and let the maintenance task act on it now."""
        self.keepalive = seconds
        self._wake.set()

    # -- internals: checkout ----------------------------------------------

    def _wait_for(self, waiter: Any, timeout: float, started: float) -> Any:
        try:
            got = waiter.wait(timeout)
        except BaseException:
            # Killed while waiting (gevent.Timeout, GreenletExit): leave the
            # queue, and pass on anything handed to us meanwhile.
            self._abandon(waiter)
            raise
        # Not woken in time, but a giver may have served us between the timeout
        # and this check (threads): then the value is ours, not to be passed on.
        if not got and self._dequeue(waiter):
            with self._lock:
                self._stats["requests_timeouts"] += 1
                in_use, waiting, size = len(self._out), len(self._waiting), self._slots
            # Slots that are neither in use nor idle are connects in progress
            # (or pings): a stalled network shows there, not in "in use".
            raise PoolTimeout(
                f"pool {self.name!r}: no connection free after waiting {time.monotonic() - started:.2f}s "
                f"(max_size={self.max_size}, size={size}, in use={in_use}, waiting={waiting}, timeout={timeout}s)"
            )
        if waiter.value is None:
            raise PoolClosed(f"pool {self.name!r} was closed while waiting for a connection")
        return waiter.value

    def _dequeue(self, waiter: Any) -> bool:
        """Take a waiter out of the queue: True if it was still queued, False if
        it has been served (givers set the value under the lock, so it is there)."""
        with self._lock:
            try:
                self._waiting.remove(waiter)
                return True
            except ValueError:
                return False

    def _abandon(self, waiter: Any) -> None:
        """A waiter that dies (killed, interrupted) leaves the queue; anything
        handed to it in the meantime is passed on."""
        if self._dequeue(waiter):
            return
        value = waiter.value
        if value is _SLOT:
            self._release_slot()
        elif isinstance(value, _Record):
            self._forget(value)
            self._give_back(value)

    def _forget(self, record: _Record) -> None:
        """Take a record handed to a waiter out of the checked-out map again."""
        with self._lock:
            if self._out.get(id(record.conn)) is record:
                del self._out[id(record.conn)]

    def _hand_out(self, record: Any, started: float, timeout: float) -> Any:
        """Turn an idle record needing a look, a record handed over by a
        returning request, or a reserved slot into a checked-out, healthy
        connection. On any failure the slot is released, never lost."""
        if record is not _SLOT:
            given = record
            try:
                record = self._vet(record)
            except BaseException:
                # Killed during the checkout check (gevent.Timeout around
                # the request): the ping may be half-read, so discard.
                self._forget(given)
                self._discard(given, "interrupted during its checkout check")
                raise
            if record is _SLOT:  # closed by the check: this request connects anew
                self._forget(given)
        if record is _SLOT:
            try:
                record = self._connect_within(started + timeout)
            except BaseException:
                self._release_slot()
                raise
        now = time.monotonic()
        record.checked_out_at = now
        if self.leak_threshold is not None:
            record.stack = _caller_stack()
        with self._lock:
            self._out[id(record.conn)] = record
            self._stats["requests_num"] += 1
            self._stats["requests_wait_ms"] += int((now - started) * 1000)
            if self._wait is not None:
                self._wait.observe(now - started)
        return record.conn

    def _vet(self, record: _Record) -> Any:
        """Check a record before handing it out. Returns the record, or _SLOT
        when it was closed and its slot should be refilled."""
        now = time.monotonic()
        why = record.why_retire(now, self.max_idle, self._slots > self.min_size)
        if why is not None:
            self._count("connections_recycled")
            self._close_quietly(record.conn, why)
            return _SLOT
        suspect = self._suspect(record)
        if self._check is None:
            if not suspect:
                return record
            # No round trip to confirm: the probe saw the server end the session.
            self._count("connections_lost")
            logger.info("pool %r: connection closed by the server while idle, replacing it", self.name)
            self._close_quietly(record.conn, "found closed by the probe")
            return _SLOT
        if not suspect and record.alive_within(self.check_window, now):
            self._count("checks_skipped")
            return record
        try:
            self._check(record.conn)
        except Exception as exc:
            self._count("connections_lost")
            logger.info("pool %r: connection failed its checkout check, replacing it: %s", self.name, exc)
            self._close_quietly(record.conn, "failed check")
            return _SLOT
        record.last_alive = time.monotonic()
        return record

    def _connect_within(self, deadline: float) -> _Record:
        """Connect for a request. A connect error that ``retry_connect`` calls
        transient (server restarting, too many connections) is retried with
        back-off until the request's deadline; then, or for any other error,
        the error reaches the caller."""
        backoff = self.reconnect_backoff
        while True:
            try:
                return self._new_record()
            except Exception as exc:
                remaining = deadline - time.monotonic()
                if self._retry_connect is None or remaining <= 0 or self._closed or not self._retry_connect(exc):
                    raise
                logger.info("pool %r: connect failed, retrying for up to %.1fs more: %s", self.name, remaining, exc)
                self._prims.sleep(min(backoff * (0.5 + random.random()), remaining))
                # At most 1 s between a request's tries (it has only its timeout),
                # never above reconnect_backoff_max nor below reconnect_backoff.
                backoff = max(self.reconnect_backoff, min(backoff * 2, 1.0, self.reconnect_backoff_max))

    def _new_record(self) -> _Record:
        started = time.monotonic()
        try:
            conn = self._connect()
        except Exception:
            self._count("connections_errors")
            raise
        with self._lock:
            self._stats["connections_num"] += 1
            self._stats["connections_ms"] += int((time.monotonic() - started) * 1000)
        return _Record(conn, self.max_lifetime)

    # -- internals: checkin -------------------------------------------------

    def _give_back(self, record: _Record) -> None:
        """An idle record goes to the first waiter, or back to the idle deque."""
        with self._lock:
            if self._closed:
                self._slots -= 1
                closing = True
            elif self._waiting:
                # Handed over: in use from now on (stats, leak checks, wait()),
                # though its new holder runs only when the hub or the OS gets to it.
                record.checked_out_at = time.monotonic()
                self._out[id(record.conn)] = record
                self._waiting.popleft().give(record)
                return
            else:
                self._idle.append(record)
                return
        if closing:
            self._close_quietly(record.conn, "pool closed")

    def _discard(self, record: _Record, why: str) -> None:
        try:
            self._close_quietly(record.conn, why)
        finally:  # an interrupted close (COM_QUIT is a write) still frees the slot
            self._release_slot()

    def _release_slot(self) -> None:
        """A connection is gone: its slot goes to the first waiter (who then
        connects), or back to the pool."""
        with self._lock:
            if self._waiting and not self._closed:
                self._waiting.popleft().give(_SLOT)
            else:
                self._slots -= 1

    def _close_quietly(self, conn: Any, why: str) -> None:
        try:
            if self._close_conn is not None:
                self._close_conn(conn)
            else:
                conn.close()
        except Exception as exc:
            # The connection is being thrown away; failing to close it cleanly
            # (usually: the server already dropped it) is worth a debug line.
            logger.debug("pool %r: closing a connection (%s) failed: %s", self.name, why, exc)

    # -- internals: maintenance (keepalive, shrink, refill, leaks) -----------

    def _fill_one(self) -> bool:
        """Open one connection if fewer than min_size exist. True if it did."""
        with self._lock:
            if self._closed or self._slots >= self.min_size:
                return False
            self._slots += 1
        try:
            record = self._new_record()
        except BaseException:
            self._release_slot()
            raise
        self._give_back(record)
        return True

    def _maintain_loop(self) -> None:
        """Background task: refill to min_size with back-off, shrink idle
        connections past max_idle, ping idle ones past ``keepalive``, replace
        expired ones, report leaks. Holds the lock only to pick records."""
        backoff = self.reconnect_backoff
        while not self._closed:
            try:
                if self._fill_one():
                    backoff = self.reconnect_backoff
                    continue  # one at a time, but without waiting when healthy
                self._run_housekeeping()
                interval = self._maintenance_interval()
            except Exception as exc:
                # Refill failed (server down?), or a keepalive/shrink/leak pass
                # did: retry with exponential back-off and jitter, so N workers
                # do not reconnect in the same instant.
                interval = backoff * (0.5 + random.random())
                backoff = min(backoff * 2, self.reconnect_backoff_max)
                logger.info(
                    "pool %r: maintenance (refill, keepalive, shrink) failed, retrying in %.2fs: %s: %s",
                    self.name,
                    interval,
                    type(exc).__name__,
                    exc,
                )
            self._wake.wait(interval)
            self._wake.clear()

    def _maintenance_interval(self) -> float:
        # Often enough to replace an expired connection within a tenth of its
        # lifetime, and never less often than every 30 s.
        candidates = [self.max_idle / 2, self.max_lifetime / 10, 30.0]
        if self.keepalive is not None:
            candidates.append(self.keepalive / 2)
        if self.leak_threshold is not None:
            candidates.append(self.leak_threshold / 2)
        return max(0.05, min(candidates))

    def _run_housekeeping(self) -> None:
        now = time.monotonic()
        self._report_leaks(now)
        to_close: list[tuple[_Record, str]] = []
        to_ping: list[_Record] = []
        with self._lock:
            keep: deque[_Record] = deque()
            # Oldest-used first: those past max_idle go while above min_size.
            while self._idle:
                record = self._idle.popleft()
                why = record.why_retire(now, self.max_idle, self._slots - len(to_close) > self.min_size)
                if why is not None:
                    to_close.append((record, why))
                elif (
                    self.keepalive is not None
                    and self._ping is not None
                    and not record.alive_within(self.keepalive, now)
                ):
                    to_ping.append(record)
                else:
                    keep.append(record)
            self._idle = keep
            # Records being pinged are out of the idle deque but still own
            # their slots; a request arriving now connects anew or waits.
        for record, why in to_close:
            self._count("connections_recycled")
            self._discard(record, why)
        for record in to_ping:
            self._count("keepalive_num")
            try:
                self._ping(record.conn)  # type: ignore[misc]
            except Exception as exc:
                self._count("keepalive_lost")
                logger.info("pool %r: keepalive found a dead connection: %s", self.name, exc)
                self._discard(record, "keepalive failed")
                continue
            # Alive, but not *used*: last_used stays, so max_idle still
            # shrinks the pool after a burst.
            record.last_alive = time.monotonic()
            self._give_back(record)

    def _report_leaks(self, now: float) -> None:
        if self.leak_threshold is None:
            return
        with self._lock:
            leaked = [r for r in self._out.values() if r.stack and now - r.checked_out_at > self.leak_threshold]
        for record in leaked:
            self._count("leaks_reported")
            logger.warning(
                "pool %r: connection held for %.1fs (leak_threshold=%.1fs), checked out at:\n%s",
                self.name,
                now - record.checked_out_at,
                self.leak_threshold,
                record.stack,
            )
            record.stack = None  # report each checkout once

    # -- internals: fork ------------------------------------------------------

    def _refuse_if_forked(self) -> None:
        """Raise in a process forked from the one that made this pool."""
        child = _fork.pid()  # runs the child hooks first, where the fork did not
        if self._pid != child:
            raise PoolError(
                f"pool {self.name!r} was made in process {self._pid} and cannot be used in forked child "
                f"{child}: build a new pool in the child (greenpool.registry does this for you)"
            )

    def _disown_after_fork(self) -> None:
        """In a forked child: forget the parent's connections without talking
        to the server on their sockets (that would break the parent's
        sessions), and refuse further use. The lock may have been held by a
        parent thread at fork time, so the child gets fresh primitives."""
        self._lock = self._prims.Lock()
        self._wake = self._prims.Event()
        self._idle = deque()
        self._out = {}
        self._waiting = deque()
        self._closed = True
        self._maintenance = None


@_fork.in_child
def _disown_parents_pools() -> None:
    for pool in list(_all_pools):
        pool._disown_after_fork()


def _caller_stack() -> str:
    """Where the connection was checked out, for leak reports (only taken
    when leak_threshold is set: formatting a stack costs tens of µs)."""
    frames = traceback.format_stack(limit=20)[:-3]  # drop the pool's own frames
    return "".join(frames)


def _require(ok: bool, option: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"invalid pool option {option}={value!r}: expected {expected}")

"""The one module that knows which concurrency primitives a pool uses, and
what gevent (or eventlet) has patched.

A pool runs in one of two modes:

* ``"gevent"``: greenlets on one hub. Locks and events are gevent's, so a
  waiting request yields to the hub instead of blocking the process.
* ``"threads"``: native threads. Locks and events are the standard library's.

In a process monkey-patched by gevent, ``threading`` already *is* gevent, so
``"auto"`` picks ``"gevent"`` there and ``"threads"`` everywhere else.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, Literal

Mode = Literal["gevent", "threads"]
MODES = ("auto", "gevent", "threads")


def gevent_patched() -> bool:
    """True when gevent has monkey-patched ``threading`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


def socket_patched() -> bool:
    """True when gevent has monkey-patched ``socket``: a read then yields to the hub."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("socket")


_real_poll: list[Callable[..., Any]] = []


def real_poll() -> Callable[..., Any]:
    """The operating system's ``select.poll``, never a hub's: it blocks the thread
    (reply_wait) or, with a zero timeout, never blocks. Cached: before patching,
    select.poll is the real one; after, gevent keeps the original."""
    if not _real_poll:
        monkey = sys.modules.get("gevent.monkey")
        # eventlet's patched select has no poll at all (a Celery -P eventlet worker).
        eventlet_patcher = sys.modules.get("eventlet.patcher")
        if monkey is not None and monkey.is_module_patched("select"):
            _real_poll.append(monkey.get_original("select", "poll"))
        elif eventlet_patcher is not None and eventlet_patcher.is_monkey_patched("select"):
            _real_poll.append(eventlet_patcher.original("select").poll)
        else:
            import select

            _real_poll.append(select.poll)
    return _real_poll[0]


def current_greenlet() -> Any:
    """The gevent.Greenlet running now in a patched process (one that can be
    linked), or None: no gevent, the main greenlet, or a raw greenlet."""
    if not gevent_patched():
        return None
    import gevent

    current = gevent.getcurrent()
    return current if isinstance(current, gevent.Greenlet) else None


def spawn_greenlet(function: Callable[..., Any], *args: Any) -> Any:
    """Run ``function(*args)`` in a new greenlet (gevent must be patched in)."""
    import gevent

    return gevent.spawn(function, *args)


def resolve_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"concurrency must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "gevent" if gevent_patched() else "threads"
    return mode  # type: ignore[return-value]


class Primitives:
    """Factories for the lock, waiter, event and background task of one mode.

    The lock is not reentrant (cheaper): the pool never takes it twice.
    """

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "gevent":
            import gevent
            import gevent.event
            import gevent.lock

            self._gevent = gevent
            # Semaphore is compiled in gevent; its RLock is pure Python and
            # costs about three times as much per acquire/release.
            self.Lock: Callable[[], Any] = gevent.lock.Semaphore
            self.Event: Callable[[], Any] = gevent.event.Event
            self.Waiter: Callable[[], Any] = GeventWaiter
        else:
            self._gevent = None
            self.Lock = threading.Lock
            self.Event = threading.Event
            self.Waiter = ThreadWaiter

    def spawn_background(self, name: str, target: Callable[[], None]) -> Any:
        """Run ``target`` in the background: a greenlet, or a daemon thread."""
        if self._gevent is not None:
            greenlet = self._gevent.spawn(target)
            greenlet.name = name
            return greenlet
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        return thread

    def join(self, task: Any, timeout: float) -> bool:
        """Wait up to ``timeout`` for a background task; True if it ended."""
        if self._gevent is not None:
            task.join(timeout)
            return bool(task.dead)
        task.join(timeout)
        return not task.is_alive()

    def sleep(self, seconds: float) -> None:
        if self._gevent is not None:
            self._gevent.sleep(seconds)
        else:
            import time

            time.sleep(seconds)


class ThreadWaiter:
    """One queued request, in threads mode. ``give`` hands it a value (set
    synchronously, so a waiter that times out can still see it); ``wait``
    returns True once it has one."""

    __slots__ = ("value", "_event")

    def __init__(self) -> None:
        self.value: Any = None
        self._event = threading.Event()

    def give(self, value: Any) -> None:
        self.value = value
        self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


class GeventWaiter:
    """One queued request, in gevent mode: a bare hub Waiter woken by a
    zero-delay timer, cheaper than an Event (no link list, no notifier greenlet).

    The wake-up goes through the hub's next poll rather than its callback
    queue. A waiter handed a connection often runs its whole request before it
    next blocks, ending in the hand-over to the next waiter. As hub callbacks,
    those hand-overs would run back to back ahead of the poll (gevent looks at
    the clock only every 50 callbacks), and holders whose answers already sit in
    their sockets would wait behind them. Through the poll, every ready socket
    gets its turn between two hand-overs (measured: CHANGELOG, "Fixed";
    bench/tail_probe.py)."""

    __slots__ = ("value", "_waiter", "_woken", "_timer")

    def __init__(self) -> None:
        from gevent.hub import Waiter

        self.value: Any = None
        self._waiter = Waiter()
        self._woken = False
        self._timer: Any = None

    def give(self, value: Any) -> None:
        self.value = value
        if not self._woken:
            self._woken = True
            # Waiter.switch may only run in the hub; a timer's callback does.
            self._timer = self._waiter.hub.loop.timer(0.0)
            self._timer.start(self._wake)

    def _wake(self) -> None:
        self._timer.close()
        # The wait may have ended before this runs: its timeout fired after the
        # hand-over (wait() then returns True and the holder uses the value), or
        # its greenlet was killed (Pool._abandon passed the connection on). With
        # no greenlet waiting, Waiter.switch only stores None, which nobody reads.
        self._waiter.switch(None)

    def wait(self, timeout: float) -> bool:
        from gevent import Timeout

        timer = Timeout._start_new_or_dummy(timeout)
        try:
            self._waiter.get()
            return True
        except Timeout as exc:
            if exc is not timer:
                raise
            # Handed a value in the same instant the timer fired: keep it.
            return self._woken
        finally:
            timer.close()


def hub_key() -> int | None:
    """Identify the gevent hub of the calling thread, or None without gevent.

    gevent objects belong to the hub that made them, so a pool made on one hub
    must not be used from another. In an unpatched threaded process there is no
    hub to respect and all threads share one (thread-safe) pool: key None.
    """
    if not gevent_patched():
        return None
    from gevent import get_hub

    return id(get_hub())

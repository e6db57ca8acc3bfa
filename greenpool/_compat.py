"""The one module that knows which concurrency primitives a pool uses.

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
from typing import Any, Callable, Literal

Mode = Literal["gevent", "threads"]
MODES = ("auto", "gevent", "threads")


def gevent_patched() -> bool:
    """True when gevent has monkey-patched ``threading`` in this process."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


def resolve_mode(mode: str) -> Mode:
    if mode not in MODES:
        raise ValueError(f"concurrency must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "gevent" if gevent_patched() else "threads"
    return mode  # type: ignore[return-value]


class Primitives:
    """Factories for the lock, event and background task of one mode."""

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "gevent":
            import gevent
            import gevent.event
            import gevent.lock

            self._gevent = gevent
            self.Lock: Callable[[], Any] = gevent.lock.RLock
            self.Event: Callable[[], Any] = gevent.event.Event
        else:
            self._gevent = None
            self.Lock = threading.RLock
            self.Event = threading.Event

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

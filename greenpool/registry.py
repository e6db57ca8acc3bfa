"""One pool per (process, gevent hub, alias): the pools a process holds.

Pools are made lazily, on first use, never at import or settings time. The key
includes the process id (greenpool._fork), so a forked child never finds its
parent's pool and builds its own; and the hub, because gevent objects belong to
the hub (thread) that made them. In an unpatched threaded process the hub key is
None and all threads share one thread-safe pool per alias.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from greenpool import _compat, _fork, metrics
from greenpool.pool import Pool

logger = logging.getLogger("greenpool")

_Key = tuple[int, "int | None", str]

_pools: dict[_Key, tuple[Pool, object]] = {}  # key -> (pool, fingerprint)
# Guards lookup-and-store against two threads building two pools. Nothing
# inside it does I/O or waits, so under gevent (where this may be a gevent
# lock) it is never contended across a switch.
_lock = threading.Lock()


def _key(alias: str) -> _Key:
    return (_fork.pid(), _compat.hub_key(), alias)


def get_pool(alias: str, fingerprint: object, factory: Callable[[], Pool]) -> Pool:
    """Return this process's and hub's pool for ``alias``, making it with
    ``factory()`` on first use, or anew when ``fingerprint`` (what the pool
    connects to) changed: the old pool is closed."""
    key = _key(alias)
    entry = _pools.get(key)
    if entry is not None and entry[1] == fingerprint and not entry[0].closed:
        return entry[0]  # the common case, without the lock
    with _lock:
        entry = _pools.get(key)
        if entry is not None and entry[1] == fingerprint and not entry[0].closed:
            return entry[0]
        pool = factory()  # builds objects only: opens on first checkout
        _pools[key] = (pool, fingerprint)
    metrics.start_spool_writer()  # with GREENPOOL_METRICS_DIR set; once per process
    if entry is not None and not entry[0].closed:
        entry[0].close()  # outside the lock: close() waits for its task
    return pool


# The process (by pid, so a fork does not inherit it) whose pools live as
# long as it does: close_pool() there leaves them open, close_all() still
# closes them. Set by greenpool.celery in a Celery prefork child, whose
# Django fixup calls close_pool() around every task.
_kept_for_pid = 0


def keep_pools_for_process() -> None:
    """From now on, close_pool() in this process leaves its pool open (the
    connections were returned by the close() before it); close_all() at the
    process's exit closes every pool."""
    global _kept_for_pid
    _kept_for_pid = _fork.pid()


def pools_kept_for_process() -> bool:
    return _kept_for_pid == _fork.pid()


def close_pool(alias: str, timeout: float = 5.0) -> None:
    if pools_kept_for_process():
        logger.debug("pool %r kept open: this process keeps its pools until it exits", alias)
        return
    entry = _pools.pop(_key(alias), None)
    if entry is not None:
        entry[0].close(timeout)


def pools() -> dict[str, Pool]:
    """This process's and hub's open pools by alias."""
    pid, hub = _fork.pid(), _compat.hub_key()
    return {k[2]: e[0] for k, e in list(_pools.items()) if k[0] == pid and k[1] == hub and not e[0].closed}


def close_all(timeout: float = 5.0) -> None:
    """Close every pool this process made (at worker exit)."""
    pid = _fork.pid()
    for key in [k for k in list(_pools) if k[0] == pid]:
        entry = _pools.pop(key, None)
        if entry is not None:
            entry[0].close(timeout)


metrics.pool_source.append(pools)  # what metrics.snapshot() reports


@_fork.in_child
def _forget_parent_pools() -> None:
    # The child's pools disown themselves (greenpool.pool); drop the entries
    # so the dict does not grow with the parent's keys across many forks. The
    # lock may have been held by a parent thread at fork time: a fresh one.
    global _lock
    _lock = threading.Lock()
    _pools.clear()

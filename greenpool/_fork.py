"""The one place that follows fork(): this process's id, and what a forked child forgets.

A forked child inherits its parent's pools, their sockets and the registry's
entries. It must never talk to the server on those sockets (a COM_QUIT or a
rollback would end or corrupt the parent's session), and it must build its
own pools. Each module that holds per-process state registers what its child
must forget with ``in_child``; the hooks run in the order they were registered,
once per fork.

They run at the fork itself when Python forks (os.fork, multiprocessing,
gunicorn, Celery's prefork pool), and otherwise at the child's first call of
``pid()``: uWSGI forks its workers in C and, by default, runs none of Python's
at-fork hooks. The pool and the registry call ``pid()`` on every checkout and
checkin, so no inherited pool or connection is used before the hooks ran.
"""

from __future__ import annotations

import os
from collections.abc import Callable

_pid = [os.getpid()]  # the process the hooks last ran for
_child_hooks: list[Callable[[], None]] = []


def pid() -> int:
    """This process's id; in a child forked without Python's at-fork hooks, runs
    the child hooks first (once)."""
    current = os.getpid()
    if current != _pid[0]:
        _after_fork_in_child()
    return current


def in_child(hook: Callable[[], None]) -> Callable[[], None]:
    """Run ``hook`` in every child forked from now on (usable as a decorator)."""
    _child_hooks.append(hook)
    return hook


def _after_fork_in_child() -> None:
    _pid[0] = os.getpid()
    for hook in _child_hooks:
        hook()


os.register_at_fork(after_in_child=_after_fork_in_child)

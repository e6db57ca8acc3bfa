"""Celery workers: one greenpool pool per worker process, for that process's life.

Call ``install(app)`` once, in the module that makes the Celery app::

    app = Celery("proj")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    greenpool.celery.install(app)

Why a call and not the ENGINE swap alone: Celery's Django fixup
(celery/fixups/django.py) closes every connection before and after each task,
which returns a pooled connection to its pool, as it should; but under the
prefork pool it then calls ``close_pool()``, Django's "close this alias's
pool", and the child rebuilds its pool (a new server connection) for every
task. The backend must honour ``close_pool()`` for every other caller (the
test runner, management commands, user code) and cannot tell Celery's call
from theirs; and closing the pool when a child exits needs Celery's
``worker_process_shutdown`` signal. So the Celery side lives here, and
greenpool imports Celery only when this module is imported.

What ``install`` connects (docs/celery.md):

* ``worker_process_init`` (a prefork child starts): the child keeps its pools
  until it exits, so ``close_pool()`` there leaves the pool open. Connections
  inherited from the parent are never used: the child's pools are its own
  (greenpool.registry keys them by process id), and the backend drops an
  inherited connection's descriptor without a word to the server.
* ``worker_process_shutdown`` (a prefork child exits, e.g. after
  ``--max-tasks-per-child``): its pools are closed.
* ``worker_shutdown`` (the worker's main process stops; the one process of
  the solo, threads, gevent and eventlet pools): its pools are closed.
"""

from __future__ import annotations

import logging
from typing import Any

from greenpool import registry

logger = logging.getLogger("greenpool")

# Seconds a pool's close may wait for its background task at process exit.
_CLOSE_TIMEOUT = 2.0


def install(app: Any) -> None:
    """Keep each Celery worker process's greenpool pools open across tasks and
    close them when the process exits. Idempotent; ``app`` is the Celery app."""
    from celery import Celery, signals

    if not isinstance(app, Celery):
        raise TypeError(f"greenpool.celery.install() needs a celery.Celery app, got {app!r}")
    # Strong references with fixed ids: a second install() replaces, never adds.
    signals.worker_process_init.connect(
        _keep_pools_in_child, weak=False, dispatch_uid="greenpool.celery.keep_pools_in_child"
    )
    signals.worker_process_shutdown.connect(_close_pools, weak=False, dispatch_uid="greenpool.celery.close_pools_child")
    signals.worker_shutdown.connect(_close_pools, weak=False, dispatch_uid="greenpool.celery.close_pools_worker")


def _keep_pools_in_child(**_: Any) -> None:
    registry.keep_pools_for_process()


def _close_pools(**_: Any) -> None:
    try:
        registry.close_all(timeout=_CLOSE_TIMEOUT)
    except Exception:
        # The process is exiting: the server ends the sessions when the
        # sockets close; say what failed rather than stop the shutdown.
        logger.exception("greenpool: closing this worker process's pools failed")

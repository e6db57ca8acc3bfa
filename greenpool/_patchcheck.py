"""Refuse a process that gevent monkey-patched after Django's connection handler was made.

Django keeps its database connections in ``django.db.connections``, a handler whose
storage is a ``threading.local`` created when ``django.db`` is first imported. Patched
before that import, the storage is gevent's and every greenlet has its own connection.
Patched after it (uWSGI's ``--gevent-monkey-patch``, a ``patch_all()`` at the end of
wsgi.py, any server that patches once the application is loaded), the storage stays
per OS thread while ``_thread.get_ident`` now names the greenlet: all the request
greenlets of a worker find the one connection the first of them made, and Django
refuses each of them with "DatabaseWrapper objects created in a thread can only be
used in that same thread". Nothing can be repaired at that point (other modules hold
their own thread-locals made before the patch too), so greenpool says what is wrong
and how to fix it, once per process in the log and in the error of every request.

The check asks the storage itself, not the server: a value set in one greenlet must
not be visible from another. It runs only in a patched process, and once it has
passed it is not asked again.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from greenpool import _compat

logger = logging.getLogger("greenpool")

LATE_PATCH_MESSAGE = (
    "gevent monkey-patched this process after Django's database connection handler was created "
    "(django.db was imported before gevent.monkey.patch_all()), so Django keeps one connection per OS thread "
    'while every request runs in a greenlet of its own; each request would fail with "DatabaseWrapper objects '
    'created in a thread can only be used in that same thread". Patch before Django is imported: under uWSGI '
    "use --gevent-early-monkey-patch instead of --gevent-monkey-patch; with any other server, call "
    "gevent.monkey.patch_all() before anything imports Django (the first lines of wsgi.py), or use a worker "
    "that patches before loading the application (gunicorn -k gevent, greenpool-serve)"
)

_PROBE_KEY = "_greenpool_patch_probe"
_passed = False
_logged = False


def storage_is_per_greenlet(storage: Any) -> bool:
    """True when a value set on ``storage`` (a thread-local) in this greenlet is not
    visible from another greenlet of the same thread."""
    import greenlet

    setattr(storage, _PROBE_KEY, True)
    try:
        return not greenlet.greenlet(lambda: hasattr(storage, _PROBE_KEY)).switch()
    finally:
        delattr(storage, _PROBE_KEY)


def refuse_late_gevent_patch() -> None:
    """Raise ImproperlyConfigured (and log it once) when gevent has patched this process
    but Django's connections are still shared by all the greenlets of a thread."""
    global _passed, _logged
    if _passed or not _compat.gevent_patched():
        return
    from django.db import connections

    if storage_is_per_greenlet(connections._connections):
        _passed = True
        return
    if not _logged:
        _logged = True
        logger.error("greenpool: %s", LATE_PATCH_MESSAGE)
    raise ImproperlyConfigured(LATE_PATCH_MESSAGE)

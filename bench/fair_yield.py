"""The launcher change this benchmark proposes, applied by a bench-only patch (not shipped).

gevent.pywsgi serves a keep-alive connection in a loop: answer, then read the next
request. When the client already sent it (wrk answers within microseconds, from the
other core), reading it does not block, so the greenlet never yields to the hub:
one connection is served over and over while the others wait, sometimes hundreds of
milliseconds. ``install()`` makes greenpool-serve's handler yield once
(``gevent.sleep(0)``) before it reads each request, so every ready connection gets
its turn. bench/stacks.py's "gp-gevent-fair" stack turns it on through
GREENPOOL_BENCH_FAIR_YIELD=1 (read by bench.django_settings in the worker).
"""

from __future__ import annotations

_installed = []


def install() -> bool:
    """Patch greenpool.launch.worker_gevent's handler; False outside a greenpool-serve gevent worker."""
    import sys

    module = sys.modules.get("greenpool.launch.worker_gevent")
    if module is None or _installed:
        return bool(_installed)
    import gevent

    handler = module.GreenpoolHandler
    original = handler.read_requestline

    def read_requestline(self):  # type: ignore[no-untyped-def]
        gevent.sleep(0)
        return original(self)

    handler.read_requestline = read_requestline
    _installed.append(original)
    return True

"""greenpool._patchcheck: a process gevent patched after django.db was imported is told
what is wrong and which flag fixes it at its first connection, whatever server did the
patching.

Each case runs in a fresh interpreter, since monkey-patching cannot be undone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.mysql

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    sys.path.insert(0, {root!r})
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr, format="%(name)s %(message)s")
    if {order!r} == "patch first":
        from gevent import monkey; monkey.patch_all()
    import django
    from django.conf import settings
    P = {params!r}
    settings.configure(DATABASES={{"default": {{
        "ENGINE": "greenpool.backends.mysql", "NAME": P["database"], "USER": P["user"],
        "PASSWORD": P["password"], "HOST": P["host"], "PORT": str(P["port"]),
        "OPTIONS": {{"pool": {{"max_size": 2}}}}}}}}, INSTALLED_APPS=[])
    django.setup()
    from django.db import connections
    if {order!r} == "query, then patch":
        # An application that reads the database while it is loaded, before the server patches.
        with connections["default"].cursor() as cur:
            cur.execute("SELECT 1")
        connections["default"].close()
    if {order!r} != "patch first":
        from gevent import monkey; monkey.patch_all()
    import gevent

    def query():
        try:
            with connections["default"].cursor() as cur:
                cur.execute("SELECT CONNECTION_ID()")
            connections["default"].close()
            return id(connections["default"])
        except Exception as exc:
            return f"{{type(exc).__name__}}: {{exc}}"

    print(json.dumps([g.value for g in gevent.joinall([gevent.spawn(query) for _ in range(3)], timeout=30)]))
    """
)


def run(order: str, params: dict) -> tuple[list, str]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=str(ROOT), order=order, params=params)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


@pytest.mark.parametrize("order", ["import, then patch", "query, then patch"])
def test_patching_after_django_db_is_refused_with_the_flag_that_fixes_it(mysql_params, order):
    results, log = run(order, mysql_params)
    assert len(results) == 3
    for result in results:
        assert isinstance(result, str) and result.startswith("ImproperlyConfigured: "), results
        assert "--gevent-early-monkey-patch" in result and "before anything imports Django" in result
    # One line in the log for the process, not one per request.
    assert log.count("--gevent-early-monkey-patch") == 1, log


def test_patching_first_gives_every_greenlet_a_connection_of_its_own(mysql_params):
    results, log = run("patch first", mysql_params)
    assert all(isinstance(r, int) for r in results), results
    assert len(set(results)) == 3
    assert "monkey-patched" not in log

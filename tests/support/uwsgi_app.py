"""The WSGI module tests/test_uwsgi.py serves under the real uwsgi binary.

tests/djproject (ENGINE greenpool.backends.mysql, max_size 4) as users deploy it,
plus what the tests need to see from outside:

* every response carries ``X-Greenpool-Worker: <pid>``;
* each process appends the server connection ids (CONNECTION_ID()) its requests
  used to ``<GREENPOOL_UWSGI_RECORD_DIR>/used-<pid>``, once per id;
* with ``GREENPOOL_UWSGI_QUERY_AT_LOAD=1`` the module runs a query while it is
  imported, as applications that read the database at start-up do, and writes that
  connection's id to ``loaded-<pid>``. Under uWSGI's default (the app is loaded in
  the master, then the workers are forked) that connection sits idle in the
  master's pool when the workers are forked: they must never use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.djproject.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import connection  # noqa: E402

RECORD_DIR = Path(os.environ["GREENPOOL_UWSGI_RECORD_DIR"])

django_application = get_wsgi_application()

if os.environ.get("GREENPOOL_UWSGI_QUERY_AT_LOAD") == "1":
    with connection.cursor() as _cursor:
        _cursor.execute("SELECT CONNECTION_ID()")
        (_loaded_id,) = _cursor.fetchone()
    connection.close()  # back to this process's pool, where it stays open and idle
    with open(RECORD_DIR / f"loaded-{os.getpid()}", "a") as _f:
        _f.write(f"{_loaded_id}\n")

_seen: set[tuple[int, int]] = set()


def _record(body: bytes) -> None:
    try:
        thread_id = json.loads(body)["thread_id"]
    except (ValueError, KeyError, TypeError):
        return  # not a /conn answer (an error page): nothing to record
    key = (os.getpid(), thread_id)
    if key not in _seen:
        _seen.add(key)
        with open(RECORD_DIR / f"used-{os.getpid()}", "a") as f:
            f.write(f"{thread_id}\n")


def application(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    def start_with_pid(status: str, headers: list, exc_info: Any = None) -> Any:
        return start_response(status, [*headers, ("X-Greenpool-Worker", str(os.getpid()))], exc_info)

    result = django_application(environ, start_with_pid)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()  # Django's request_finished: the connection goes back to the pool
    if environ.get("PATH_INFO") == "/conn":
        _record(body)
    return [body]

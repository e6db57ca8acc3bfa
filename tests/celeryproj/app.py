"""The Celery app of tests/celeryproj: ``celery -A tests.celeryproj.app worker``.

``greenpool.celery.install(app)`` is the one line a project adds
(docs/celery.md); GREENPOOL_CELERYPROJ_INSTALL=0 leaves it out, to measure
what the ENGINE swap alone does.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.celeryproj.settings")

from celery import Celery  # noqa: E402

import greenpool.celery  # noqa: E402

app = Celery("celeryproj")
app.config_from_object("django.conf:settings", namespace="CELERY")
if os.environ.get("GREENPOOL_CELERYPROJ_INSTALL", "1") != "0":
    greenpool.celery.install(app)

from tests.celeryproj import tasks  # noqa: E402,F401  (registers the tasks)

_parent_record = os.environ.get("GREENPOOL_CELERYPROJ_PARENT_SESSION_FILE")
if _parent_record:
    from celery import signals

    @signals.worker_init.connect(weak=False)
    def _hold_a_connection_in_the_parent(**_: object) -> None:
        """Before the prefork children are forked: a query in the worker's
        main process, its connection left open, for the children to inherit."""
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            (conn_id,) = cursor.fetchone()
        with open(_parent_record, "w") as record:
            record.write(f"{os.getpid()} {conn_id}\n")

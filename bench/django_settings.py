"""Django settings for the server benchmark: the demo site with one backend or another.

Every stack of bench.run serves the same site (greenpool.demo's URLs, views,
models and middleware); only ``DATABASES`` differs, chosen by the environment
that bench/stacks.py sets for each stack:

GREENPOOL_BENCH_BACKEND
    ``greenpool``: ENGINE greenpool.backends.mysql with the demo's pool
    (GREENPOOL_DEMO_POOL_*: max_size 5, timeout 10 s; bench/stacks.py sets min_size
    to 5 as well), CONN_MAX_AGE 0, CONN_HEALTH_CHECKS on, as greenpool.demo.settings has it.
    ``django``: Django's stock ENGINE django.db.backends.mysql on PyMySQL
    (``pymysql.install_as_MySQLdb()``, the usual recipe), Django's defaults.
    ``dbpool``: django-db-connection-pool's ENGINE dj_db_conn_pool.backends.mysql
    with its default POOL_OPTIONS (pool_size 10, max_overflow 10, pre_ping).
GREENPOOL_BENCH_CONN_MAX_AGE
    ``0`` (Django's default) or ``none`` (persistent connections); ``django`` only.
GREENPOOL_BENCH_TUNED
    ``1``: OPTIONS["ssl_disabled"] = True, the "tuned" series. Unset: PyMySQL's
    defaults, as users run it (PyMySQL 1.2 then builds a TLS context per connect).
GREENPOOL_BENCH_COUNTER_DIR
    Where bench.connect_counter counts this process's MySQL connects.
GREENPOOL_BENCH_TAIL_DIR
    Where bench.tail_probe writes this process's timings (bench.tail_anatomy only).

The database is GREENPOOL_MYSQL_* (bench.run points it at its own database and
account).
"""

import os

from django.core.exceptions import ImproperlyConfigured

from greenpool.demo.settings import *  # noqa: F401,F403  (the demo site, same code for every stack)
from greenpool.demo.settings import DATABASES as _DEMO_DATABASES

BACKEND = os.environ.get("GREENPOOL_BENCH_BACKEND", "greenpool")
_CONN_MAX_AGE_RAW = os.environ.get("GREENPOOL_BENCH_CONN_MAX_AGE", "0")
TUNED = os.environ.get("GREENPOOL_BENCH_TUNED", "") == "1"

WSGI_APPLICATION = "bench.wsgi.application"

_counter_dir = os.environ.get("GREENPOOL_BENCH_COUNTER_DIR")
if _counter_dir:
    from bench import connect_counter

    connect_counter.install(_counter_dir)

_tail_dir = os.environ.get("GREENPOOL_BENCH_TAIL_DIR")
if _tail_dir:
    from bench import tail_probe

    tail_probe.install(_tail_dir)

_demo = _DEMO_DATABASES["default"]
_options = {k: v for k, v in _demo["OPTIONS"].items() if k != "pool"}  # charset, connect_timeout
if TUNED:
    _options["ssl_disabled"] = True
_common = {k: _demo[k] for k in ("NAME", "HOST", "PORT", "USER", "PASSWORD")}

if BACKEND == "greenpool":
    DATABASES = {"default": {**_demo, "OPTIONS": {**_options, "pool": dict(_demo["OPTIONS"]["pool"])}}}
elif BACKEND in ("django", "dbpool"):
    # Django's MySQL backend imports MySQLdb; users of PyMySQL alias it like this.
    import pymysql

    pymysql.install_as_MySQLdb()
    if _CONN_MAX_AGE_RAW == "none":
        conn_max_age = None
    elif _CONN_MAX_AGE_RAW.isdigit():
        conn_max_age = int(_CONN_MAX_AGE_RAW)
    else:
        raise ImproperlyConfigured(f"GREENPOOL_BENCH_CONN_MAX_AGE={_CONN_MAX_AGE_RAW!r}: use 0, a number or none")
    engine = "django.db.backends.mysql" if BACKEND == "django" else "dj_db_conn_pool.backends.mysql"
    DATABASES = {"default": {"ENGINE": engine, **_common, "CONN_MAX_AGE": conn_max_age, "OPTIONS": _options}}
else:
    raise ImproperlyConfigured(f"GREENPOOL_BENCH_BACKEND={BACKEND!r}: use greenpool, django or dbpool")

import logging as _logging  # noqa: E402


class OneLineFormatter(_logging.Formatter):
    """Errors Django turns into 500s, one line each (the exception, no traceback), so
    that bench.run can count them by kind without a flood of tracebacks."""

    def format(self, record: _logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text += f" | {type(exc).__module__}.{type(exc).__name__}: {exc}"
        return f"[bench-error] {text}"


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"oneline": {"()": "bench.django_settings.OneLineFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "oneline"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False}},
}

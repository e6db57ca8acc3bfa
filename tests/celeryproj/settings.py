"""Django and Celery settings of tests/celeryproj, chosen by the environment
that tests/support/celery_worker.py sets:

GREENPOOL_CELERYPROJ_BACKEND   ``greenpool`` (the ENGINE swap, OPTIONS["pool"]) or
                               ``django`` (Django's stock MySQL ENGINE on PyMySQL)
GREENPOOL_CELERYPROJ_MAX_SIZE  the pool's max_size (greenpool; default 4)
GREENPOOL_CELERYPROJ_CONN_MAX_AGE  ``0`` or ``none`` (django only)
GREENPOOL_CELERYPROJ_DB        the database the tasks use
GREENPOOL_CELERYPROJ_BROKER    the Redis URL (broker and result backend)
GREENPOOL_CELERYPROJ_QUEUE     the queue this worker (and beat) use
GREENPOOL_CELERYPROJ_BEAT      ``1``: a beat schedule that sends ``record_tick`` every 0.5 s
GREENPOOL_CELERYPROJ_EAGER     ``1``: task_always_eager
"""

import os

from django.core.exceptions import ImproperlyConfigured

SECRET_KEY = "greenpool-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

BACKEND = os.environ.get("GREENPOOL_CELERYPROJ_BACKEND", "greenpool")
_common = {
    "NAME": os.environ.get("GREENPOOL_CELERYPROJ_DB", "greenpool_celery"),
    "USER": os.environ.get("GREENPOOL_MYSQL_USER", "root"),
    "PASSWORD": os.environ.get("GREENPOOL_MYSQL_PASSWORD", ""),
    "HOST": os.environ.get("GREENPOOL_MYSQL_HOST", "127.0.0.1"),
    "PORT": os.environ.get("GREENPOOL_MYSQL_PORT", "3306"),
}
if BACKEND == "greenpool":
    _max_size = int(os.environ.get("GREENPOOL_CELERYPROJ_MAX_SIZE", "4"))
    DATABASES = {
        "default": {
            **_common,
            "ENGINE": "greenpool.backends.mysql",
            "OPTIONS": {"pool": {"max_size": _max_size, "timeout": 10}, "charset": "utf8mb4"},
        }
    }
elif BACKEND == "django":
    import pymysql

    pymysql.install_as_MySQLdb()
    _age = os.environ.get("GREENPOOL_CELERYPROJ_CONN_MAX_AGE", "0")
    DATABASES = {
        "default": {
            **_common,
            "ENGINE": "django.db.backends.mysql",
            "CONN_MAX_AGE": None if _age == "none" else int(_age),
            "OPTIONS": {"charset": "utf8mb4"},
        }
    }
else:
    raise ImproperlyConfigured(f"GREENPOOL_CELERYPROJ_BACKEND must be 'greenpool' or 'django', got {BACKEND!r}")

CELERY_BROKER_URL = os.environ.get("GREENPOOL_CELERYPROJ_BROKER", "redis://127.0.0.1:6379/0")
CELERY_RESULT_BACKEND = CELERY_BROKER_URL
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("GREENPOOL_CELERYPROJ_QUEUE", "greenpool-celeryproj")
CELERY_RESULT_EXPIRES = 600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_ALWAYS_EAGER = os.environ.get("GREENPOOL_CELERYPROJ_EAGER") == "1"
if os.environ.get("GREENPOOL_CELERYPROJ_BEAT") == "1":
    CELERY_BEAT_SCHEDULE = {"tick": {"task": "celeryproj.record_tick", "schedule": 0.5}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"greenpool": {"handlers": ["console"], "level": "INFO"}},
}

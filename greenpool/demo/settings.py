"""Settings of the demo site, from the environment.

GREENPOOL_MYSQL_HOST/_PORT/_USER/_PASSWORD/_DATABASE (defaults 127.0.0.1, 3306,
root, empty, test) say where MySQL is; GREENPOOL_DEMO_POOL_MAX_SIZE (5),
GREENPOOL_DEMO_POOL_MIN_SIZE (1) and GREENPOOL_DEMO_POOL_TIMEOUT (10 s) size the
pool of each worker process.
"""

import os

from django.core.exceptions import ImproperlyConfigured


def _env_number(name, default, kind=int, minimum=0):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a {kind.__name__}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be >= {minimum}")
    return value


SECRET_KEY = os.environ.get("GREENPOOL_DEMO_SECRET_KEY", "greenpool-demo-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "greenpool.demo.urls"
WSGI_APPLICATION = "greenpool.demo.wsgi.application"
INSTALLED_APPS = ["greenpool.demo.apps.DemoConfig"]
MIDDLEWARE = ["greenpool.middleware.DatabaseUnavailableMiddleware"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": "greenpool.backends.mysql",
        "NAME": os.environ.get("GREENPOOL_MYSQL_DATABASE", "test"),
        "HOST": os.environ.get("GREENPOOL_MYSQL_HOST", "127.0.0.1"),
        "PORT": _env_number("GREENPOOL_MYSQL_PORT", 3306, minimum=1),
        "USER": os.environ.get("GREENPOOL_MYSQL_USER", "root"),
        "PASSWORD": os.environ.get("GREENPOOL_MYSQL_PASSWORD", ""),
        "CONN_MAX_AGE": 0,  # the pool keeps the connections
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            "charset": "utf8mb4",
            "connect_timeout": 5,
            "pool": {
                "min_size": _env_number("GREENPOOL_DEMO_POOL_MIN_SIZE", 1),
                "max_size": _env_number("GREENPOOL_DEMO_POOL_MAX_SIZE", 5, minimum=1),
                "timeout": _env_number("GREENPOOL_DEMO_POOL_TIMEOUT", 10.0, kind=float, minimum=0.001),
            },
        },
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"django.request": {"level": "ERROR"}},
}

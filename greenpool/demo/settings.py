"""Settings of the demo site, from the environment.

GREENPOOL_MYSQL_HOST/_PORT/_USER/_PASSWORD/_DATABASE (defaults 127.0.0.1, 3306,
root, empty, test) say where MySQL is; GREENPOOL_DEMO_POOL_MAX_SIZE (5),
GREENPOOL_DEMO_POOL_MIN_SIZE (1) and GREENPOOL_DEMO_POOL_TIMEOUT (10 s) size the
pool of each worker process.

For trying out (and testing) failure behaviour:

* GREENPOOL_DEMO_CONNECT_TIMEOUT (5 s) and GREENPOOL_DEMO_READ_TIMEOUT (none:
  a query waits as long as the server takes): PyMySQL's connect_timeout and
  read_timeout. read_timeout also bounds the login handshake, so without it a
  stalled network hangs a connect.
* GREENPOOL_DEMO_HEALTH_CHECKS (1): CONN_HEALTH_CHECKS; 0 turns the checkout
  ping off.
* GREENPOOL_DEMO_POOL_KEEPALIVE ("auto"): the pool's keepalive, "auto",
  seconds, or "off".
* GREENPOOL_DEMO_POOL_REPLY_WAIT (the pool's default, 0.0003): the pool's
  reply_wait in seconds; 0 turns it off.
* GREENPOOL_DEMO_POOL_METRICS (1): the pool's metrics option; 0 turns the
  histograms of /metrics off (bench.ab measures what they cost).
* GREENPOOL_DEMO_TEST_VIEWS (0): 1 adds the /test/... views of
  greenpool.demo.test_views (session state, interrupted queries, reprs), which
  the fault tests use. Never turn it on for a server others can reach.
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


def _env_flag(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (1/0, true/false, yes/no, on/off)")


def _env_keepalive(name):
    raw = os.environ.get(name)
    if raw is None or raw == "" or raw.strip().lower() == "auto":
        return "auto"
    if raw.strip().lower() in ("0", "off", "false", "no"):
        return False
    return _env_number(name, None, kind=float, minimum=0.001)


SECRET_KEY = os.environ.get("GREENPOOL_DEMO_SECRET_KEY", "greenpool-demo-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "greenpool.demo.urls"
WSGI_APPLICATION = "greenpool.demo.wsgi.application"
INSTALLED_APPS = ["greenpool.demo.apps.DemoConfig"]
MIDDLEWARE = ["greenpool.middleware.ViewLabelMiddleware", "greenpool.middleware.DatabaseUnavailableMiddleware"]
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
        "CONN_HEALTH_CHECKS": _env_flag("GREENPOOL_DEMO_HEALTH_CHECKS", True),
        "OPTIONS": {
            "charset": "utf8mb4",
            "connect_timeout": _env_number("GREENPOOL_DEMO_CONNECT_TIMEOUT", 5.0, kind=float, minimum=0.001),
            "pool": {
                "min_size": _env_number("GREENPOOL_DEMO_POOL_MIN_SIZE", 1),
                "max_size": _env_number("GREENPOOL_DEMO_POOL_MAX_SIZE", 5, minimum=1),
                "timeout": _env_number("GREENPOOL_DEMO_POOL_TIMEOUT", 10.0, kind=float, minimum=0.001),
                "keepalive": _env_keepalive("GREENPOOL_DEMO_POOL_KEEPALIVE"),
                "metrics": _env_flag("GREENPOOL_DEMO_POOL_METRICS", True),
            },
        },
    }
}
_reply_wait = _env_number("GREENPOOL_DEMO_POOL_REPLY_WAIT", None, kind=float)
if _reply_wait is not None:  # otherwise the pool's own default
    DATABASES["default"]["OPTIONS"]["pool"]["reply_wait"] = _reply_wait
_read_timeout = _env_number("GREENPOOL_DEMO_READ_TIMEOUT", None, kind=float, minimum=0.001)
if _read_timeout is not None:
    DATABASES["default"]["OPTIONS"]["read_timeout"] = _read_timeout
    DATABASES["default"]["OPTIONS"]["write_timeout"] = _read_timeout

# Test-only views (greenpool.demo.test_views): never on by default.
GREENPOOL_DEMO_TEST_VIEWS = _env_flag("GREENPOOL_DEMO_TEST_VIEWS", False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"django.request": {"level": "ERROR"}},
}

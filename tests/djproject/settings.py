"""A minimal Django project on greenpool.backends.mysql, for running Django's
own tooling (test runner, migrate, dbshell) in subprocesses."""

import os

SECRET_KEY = "greenpool-tests-only"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "tests.djproject.sample"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DATABASES = {
    "default": {
        "ENGINE": "greenpool.backends.mysql",
        "NAME": os.environ.get("GREENPOOL_DJPROJECT_DB", "greenpool_djproject"),
        "USER": os.environ.get("GREENPOOL_MYSQL_USER", "root"),
        "PASSWORD": os.environ.get("GREENPOOL_MYSQL_PASSWORD", ""),
        "HOST": os.environ.get("GREENPOOL_MYSQL_HOST", "127.0.0.1"),
        "PORT": os.environ.get("GREENPOOL_MYSQL_PORT", "3306"),
        "CONN_HEALTH_CHECKS": True,
        # charset explicit: Django 4.2 defaults to utf8 (utf8mb3), 5.x to utf8mb4.
        "OPTIONS": {"pool": {"max_size": 4, "timeout": 10}, "charset": "utf8mb4"},
    }
}
ROOT_URLCONF = "tests.djproject.urls"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
MIDDLEWARE = ["greenpool.middleware.ViewLabelMiddleware", "greenpool.middleware.DatabaseUnavailableMiddleware"]

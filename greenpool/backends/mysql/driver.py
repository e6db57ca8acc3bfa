"""Make sure Django's MySQL backend runs on PyMySQL, the pure-Python driver.

Django's backend imports ``MySQLdb``. Under gevent the driver must be pure
Python so its socket I/O yields to the hub; mysqlclient (the C ``MySQLdb``)
blocks the whole process on every query, and its exception classes are not
PyMySQL's, so greenpool's errors would not match. This runs when the backend
is imported (when Django first loads the ENGINE), not when greenpool is.
"""

from __future__ import annotations

import sys

import pymysql
from django.core.exceptions import ImproperlyConfigured

# Django 6.0 requires mysqlclient >= 2.2.1 and reads the version from
# MySQLdb.version_info; PyMySQL's install_as_MySQLdb() announces 1.4.6.
# PyMySQL speaks the protocol Django needs, so it announces what Django checks.
_MYSQLCLIENT_API_VERSION = (2, 2, 1, "final", 0)


def ensure_pymysql() -> None:
    loaded = sys.modules.get("MySQLdb")
    if loaded is not None and loaded is not pymysql:
        raise ImproperlyConfigured(
            "greenpool.backends.mysql needs PyMySQL, but the C driver MySQLdb (mysqlclient) was imported "
            f"first (from {getattr(loaded, '__file__', '?')}). mysqlclient blocks the gevent hub on every query "
            "and its exception classes are not PyMySQL's. Remove the import of MySQLdb (or the mysqlclient "
            "package) from this process."
        )
    if loaded is None:
        pymysql.install_as_MySQLdb()
    _alias_submodules()
    if pymysql.version_info < _MYSQLCLIENT_API_VERSION:
        pymysql.version_info = _MYSQLCLIENT_API_VERSION


def _alias_submodules() -> None:
    """Make ``MySQLdb.X`` the very module ``pymysql.X``.

    install_as_MySQLdb() aliases only the package. Django then imports
    ``MySQLdb.converters`` and ``MySQLdb.constants``, which would load second
    copies of PyMySQL's modules (and rebind ``pymysql.err`` to a copy whose
    OperationalError PyMySQL never raises, so ``except`` clauses stop
    matching). Registering every loaded submodule under both names first
    keeps one copy of each.
    """
    import pymysql.connections  # noqa: F401  (loads err, converters, constants, ...)
    import pymysql.constants.CLIENT  # noqa: F401
    import pymysql.constants.FIELD_TYPE  # noqa: F401
    import pymysql.converters  # noqa: F401
    import pymysql.cursors  # noqa: F401

    for name, module in list(sys.modules.items()):
        if name.startswith("pymysql."):
            sys.modules.setdefault("MySQLdb." + name[len("pymysql.") :], module)

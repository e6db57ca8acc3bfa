"""Errors raised by greenpool pools.

They derive from PyMySQL's OperationalError so that code which already catches
database errors (Django's ``wrap_database_errors`` included) catches these too.
"""

from pymysql.err import OperationalError


class PoolError(OperationalError):
    """Base class of every error a pool raises."""


class PoolTimeout(PoolError):
    """No connection became free within the timeout."""


class TooManyRequests(PoolError):
    """More requests are already waiting than ``max_waiting`` allows."""


class PoolClosed(PoolError):
    """The pool was closed; it hands out no more connections."""

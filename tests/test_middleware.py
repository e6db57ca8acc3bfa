"""greenpool/middleware.py: which errors answer 503 (no database needed)."""

import pymysql
import pytest

from greenpool import mysql
from greenpool.errors import PoolClosed, PoolTimeout, TooManyRequests
from greenpool.middleware import unavailable_cause


def _wrapped(exc: BaseException) -> BaseException:
    """As Django's wrap_database_errors raises it: a django.db error caused by ``exc``."""
    from django.db import OperationalError

    outer = OperationalError(*exc.args)
    outer.__cause__ = exc
    return outer


@pytest.mark.parametrize("code", sorted(mysql.TRANSIENT_ERROR_CODES))
def test_every_error_the_pool_retries_a_connect_for_answers_503(code):
    # A request that retried a connect up to its pool timeout raises the last
    # such error: it must be a 503 (Retry-After), not a 500.
    exc = pymysql.err.OperationalError(code, "message")
    assert unavailable_cause(_wrapped(exc)) is exc


@pytest.mark.parametrize("error", [PoolTimeout("t"), TooManyRequests("t"), PoolClosed("t")])
def test_pool_errors_answer_503(error):
    assert unavailable_cause(_wrapped(error)) is error


@pytest.mark.parametrize("code", [1045, 1049, 1146, 1205, 1213, 1317])
def test_errors_that_waiting_does_not_cure_are_not_turned_into_503(code):
    # Access denied, unknown database/table, lock wait timeout, deadlock, a
    # query killed with KILL QUERY: the application's or the operator's business.
    assert unavailable_cause(_wrapped(pymysql.err.OperationalError(code, "message"))) is None

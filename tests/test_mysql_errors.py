"""greenpool/mysql_errors.py: what a MySQL error means to the pool (retry a connect?), the
middleware (503?) and the launcher (a setting that waiting will not fix?). One test uses the
real server from GREENPOOL_MYSQL_*; the others need none."""

import socket

import pymysql
import pytest

from greenpool import mysql_errors
from greenpool.errors import PoolClosed, PoolTimeout, TooManyRequests
from greenpool.mysql_errors import permanent_connect_error, unavailable_cause


def _wrapped(exc: BaseException) -> BaseException:
    """As Django's wrap_database_errors raises it: a django.db error caused by ``exc``."""
    from django.db import OperationalError

    outer = OperationalError(*exc.args)
    outer.__cause__ = exc
    return outer


@pytest.mark.parametrize("code", sorted(mysql_errors.TRANSIENT_CODES))
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


def test_a_refused_login_is_permanent_behind_django_and_a_retry_loop():
    denied = pymysql.err.OperationalError(1045, "Access denied for user 'x'@'127.0.0.1'")
    try:
        try:
            raise denied
        except pymysql.err.OperationalError:
            raise RuntimeError("could not open min_size connections")  # noqa: B904 - a __context__, as in the pool
    except RuntimeError as outer:
        assert permanent_connect_error(_wrapped(outer)) is denied


@pytest.mark.parametrize("code", sorted(mysql_errors.TRANSIENT_CODES))
def test_an_outage_is_never_permanent(code):
    assert permanent_connect_error(_wrapped(pymysql.err.OperationalError(code, "message"))) is None


def test_an_unknown_host_name_is_permanent():
    exc = pymysql.err.OperationalError(2003, "Can't connect to MySQL server on 'db.example'")
    exc.original_exception = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert permanent_connect_error(exc) is exc


def test_the_middleware_looks_four_causes_deep():
    chain: BaseException = pymysql.err.OperationalError(2006, "gone")
    for depth in range(5):
        outer = RuntimeError(f"level {depth}")
        outer.__cause__ = chain
        chain = outer
    assert len(list(mysql_errors.causes(chain, limit=4))) == 5
    assert unavailable_cause(chain) is None  # the 2006 is 5 links down
    assert unavailable_cause(chain.__cause__) is not None


@pytest.mark.mysql
def test_transient_and_permanent_connect_errors_are_told_apart(mysql_params):
    import pymysql

    from tests.support.net import free_port

    with pytest.raises(pymysql.err.OperationalError) as refused:
        pymysql.connect(host="127.0.0.1", port=free_port(), user="root", connect_timeout=2)
    assert mysql_errors.is_transient_connect_error(refused.value), refused.value
    with pytest.raises(pymysql.err.OperationalError) as denied:
        pymysql.connect(
            host=mysql_params["host"],
            port=int(mysql_params["port"]),
            user="greenpool_no_such_user",
            password="wrong",
            connect_timeout=2,
        )
    assert not mysql_errors.is_transient_connect_error(denied.value), denied.value


def test_a_name_that_does_not_resolve_is_permanent_and_a_resolver_that_cannot_answer_is_transient():
    import socket

    import pymysql

    def lookup_failure(errno: int, text: str) -> pymysql.err.OperationalError:
        # As PyMySQL's connect() reports a resolver error: 2003, wrapping it.
        exc = pymysql.err.OperationalError(
            2003, f"Can't connect to MySQL server on 'db.example' ([Errno {errno}] {text})"
        )
        exc.original_exception = socket.gaierror(errno, text)
        return exc

    assert not mysql_errors.is_transient_connect_error(lookup_failure(socket.EAI_NONAME, "Name or service not known"))
    assert mysql_errors.is_transient_connect_error(
        lookup_failure(socket.EAI_AGAIN, "Temporary failure in name resolution")
    )

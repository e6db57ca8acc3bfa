"""What a MySQL error means to greenpool: one list of codes per meaning, one walk along
an exception's causes.

Three readers ask three questions of the same errors:

- the pool, when a connect fails: will waiting cure it? (``is_transient_connect_error``);
- the middleware and the demo's preparation, when a request failed: is the database
  unavailable, so the answer is a 503 and not a 500? (``unavailable_cause``);
- the launcher at boot: is it a setting that waiting will not fix (a refused login, an
  unknown database, a host name that does not resolve)? (``permanent_connect_error``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

from pymysql.err import OperationalError

from greenpool.errors import PoolError

#: "Cannot reach / lost the server", "too many connections", "shutdown in progress":
#: they pass with time, so the pool retries a connect for them.
TRANSIENT_CODES = frozenset({1040, 1053, 2002, 2003, 2006, 2013})
#: What a request answers 503 for (Retry-After): the transient codes, and 2005 (unknown
#: server host), which is "the database is unreachable" from the client's side too.
UNAVAILABLE_CODES = TRANSIENT_CODES | {2005}
#: Login errors that waiting will not cure: access denied (to the server, to the database,
#: by the auth plugin) and unknown database.
PERMANENT_LOGIN_CODES = frozenset({1044, 1045, 1049, 1698})


def causes(exc: BaseException | None, *, limit: int, follow_context: bool = False) -> Iterator[BaseException]:
    """``exc``, then up to ``limit`` exceptions behind it: each one's ``__cause__`` (the
    ``raise ... from`` that Django's wrap_database_errors uses), and with
    ``follow_context`` its ``__context__`` where it has no cause."""
    seen = 0
    while exc is not None and seen <= limit:
        yield exc
        exc = exc.__cause__ or (exc.__context__ if follow_context else None)
        seen += 1


def mysql_code(exc: BaseException) -> int | None:
    """The MySQL error number of a PyMySQL OperationalError, else None."""
    if isinstance(exc, OperationalError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None


def _resolver_error(exc: BaseException) -> socket.gaierror | None:
    # PyMySQL reports a failed name lookup as 2003, wrapping the resolver's error.
    original = getattr(exc, "original_exception", None)
    return original if isinstance(original, socket.gaierror) else None


def is_transient_connect_error(exc: BaseException) -> bool:
    """True for connect errors worth retrying while the server comes back; False for those
    that will not pass by waiting (bad password, unknown database, unknown host). A resolver
    that could not answer now (EAI_AGAIN) may answer later; an unknown name will not."""
    if isinstance(exc, OperationalError) and exc.args:
        resolver = _resolver_error(exc)
        if resolver is not None:
            return resolver.errno == socket.EAI_AGAIN
        return exc.args[0] in TRANSIENT_CODES
    return isinstance(exc, (ConnectionError, TimeoutError))


def unavailable_cause(exc: BaseException) -> BaseException | None:
    """The pool or connection error behind ``exc`` that makes the database unavailable
    (a PoolError, or one of UNAVAILABLE_CODES), or None for any other error."""
    for link in causes(exc, limit=4):
        if isinstance(link, PoolError) or mysql_code(link) in UNAVAILABLE_CODES:
            return link
    return None


def permanent_connect_error(exc: BaseException | None) -> BaseException | None:
    """The connect error behind ``exc`` (causes and contexts) that waiting will not cure:
    a refused login, an unknown database, or a host name that does not resolve
    (EAI_NONAME). None for anything else, outages included."""
    for link in causes(exc, limit=7, follow_context=True):
        code = mysql_code(link)
        if code in PERMANENT_LOGIN_CODES:
            return link
        resolver = _resolver_error(link)
        if code == 2003 and resolver is not None and resolver.errno == socket.EAI_NONAME:
            return link
    return None

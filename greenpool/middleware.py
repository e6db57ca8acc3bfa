"""Django middleware of greenpool.

* ``DatabaseUnavailableMiddleware``: answer 503 + Retry-After, not a 500
  traceback, when the database is busy or away. A PoolTimeout (every
  connection busy for ``timeout`` seconds), TooManyRequests, or a connection
  the server refused or dropped is a temporary condition: the client should
  retry, and nginx may try another upstream.
* ``ViewLabelMiddleware``: label the request's connection hold time with its
  view (greenpool.metrics), so /metrics shows which views hold connections.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import OperationalError as DjangoOperationalError
from django.http import HttpRequest, HttpResponse
from pymysql.err import OperationalError as PyMySQLOperationalError

from greenpool import metrics
from greenpool.mysql_errors import unavailable_cause

logger = logging.getLogger("greenpool")

RETRY_AFTER_SECONDS = 1


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> Any:
        if not isinstance(exception, (DjangoOperationalError, PyMySQLOperationalError)):
            return None
        cause = unavailable_cause(exception)
        if cause is None:
            return None
        logger.warning("503 for %s %s: %s: %s", request.method, request.path, type(cause).__name__, cause)
        response = HttpResponse(
            f"Service unavailable: the database is busy or unreachable ({type(cause).__name__}). Retry shortly.\n",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


class ViewLabelMiddleware:
    """The view label of greenpool_pool_connection_hold_seconds: the URL pattern's
    name (with its namespaces) or else the view's dotted path, as Django's
    ResolverMatch.view_name gives it. Bounded: a process keeps at most
    metrics.MAX_VIEWS labels."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # Threads are reused across requests: a request that never reaches a
        # view must not be counted under the previous request's.
        metrics.set_view(metrics.NO_VIEW)
        return self.get_response(request)

    def process_view(self, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any) -> None:
        match = getattr(request, "resolver_match", None)
        if match is not None:
            metrics.set_view(match.view_name)
        return None

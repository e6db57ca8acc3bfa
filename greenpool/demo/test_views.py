"""Views the fault tests drive through a real greenpool-serve: session state left
behind on purpose, a query interrupted by gevent.Timeout, reprs.

Shipped with the demo because the fault tests run the installed demo; off unless asked for.

They exist only when GREENPOOL_DEMO_TEST_VIEWS=1 (greenpool.demo.urls); nothing
here is reachable on a default demo server. Each answers JSON.
"""

import os

from django.db import connection
from django.http import HttpResponseBadRequest, JsonResponse

LOCK_NAME = "greenpool_demo_test_lock"
USER_VARIABLE = "@greenpool_demo_test"
TEMP_TABLE = "greenpool_demo_test_tmp"
SESSION_VARIABLE = "group_concat_max_len"
SESSION_VALUE = 12345

# What /test/dirty?do=NAME leaves on the connection it used. Each is a plain
# SQL statement or two, as an application would send them.
DIRTY = {
    "user_variable": [f"SET {USER_VARIABLE} = 'left by an earlier request'"],
    "user_variable_in_select": [f"SELECT {USER_VARIABLE} := 'left by an earlier request'"],
    "temporary_table": [f"CREATE TEMPORARY TABLE {TEMP_TABLE} (id INT)", f"INSERT INTO {TEMP_TABLE} VALUES (1)"],
    "session_variable": [f"SET SESSION {SESSION_VARIABLE} = {SESSION_VALUE}"],
    "named_lock": [f"SELECT GET_LOCK('{LOCK_NAME}', 0)"],
    "open_transaction": ["START TRANSACTION", "UPDATE greenpool_demo_counter SET value = value + 1000000 WHERE id = 1"],
    "isolation_level": ["SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE"],
}


def _one(cursor, sql):
    cursor.execute(sql)
    row = cursor.fetchone()
    return row[0] if row else None


def dirty(request):
    """Leave one kind of session state behind, and return the connection id."""
    what = request.GET.get("do", "")
    if what not in DIRTY:
        return HttpResponseBadRequest(f"do must be one of {', '.join(DIRTY)}\n")
    with connection.cursor() as cursor:
        for sql in DIRTY[what]:
            cursor.execute(sql)
            cursor.fetchall()
        return JsonResponse({"did": what, "connection_id": _one(cursor, "SELECT CONNECTION_ID()")})


def session(request):
    """What the session this request got carries: each kind of state of DIRTY."""
    with connection.cursor() as cursor:
        state = {
            "connection_id": _one(cursor, "SELECT CONNECTION_ID()"),
            "user_variable": _one(cursor, f"SELECT {USER_VARIABLE}"),
            "session_variable": int(_one(cursor, f"SELECT @@SESSION.{SESSION_VARIABLE}")),
            "session_variable_global": int(_one(cursor, f"SELECT @@GLOBAL.{SESSION_VARIABLE}")),
            "named_lock_holder": _one(cursor, f"SELECT IS_USED_LOCK('{LOCK_NAME}')"),
            "in_transaction": int(_one(cursor, "SELECT @@in_transaction")),
            "isolation_level": _one(cursor, "SELECT @@SESSION.tx_isolation"),
        }
        try:
            cursor.execute(f"SELECT COUNT(*) FROM {TEMP_TABLE}")
            cursor.fetchall()
            state["temporary_table"] = True
        except Exception:  # ProgrammingError 1146: the table does not exist in this session
            state["temporary_table"] = False
    from greenpool.demo.models import Counter  # here: the fault tests import DIRTY without Django set up

    # Through the ORM, as a request would: a leftover uncommitted +1000000 on
    # this connection would show here (read in this session).
    state["counter_1"] = Counter.objects.get(pk=1).value
    return JsonResponse(state)


def interrupted(request):
    """SELECT SLEEP(s) under gevent.Timeout(timeout): the query is cut off
    mid-flight, the timeout is caught, the view answers normally.

    Only meaningful in a gevent worker (answers 400 elsewhere)."""
    from greenpool import _compat

    if not _compat.gevent_patched():
        return HttpResponseBadRequest("only in a gevent worker\n")
    import gevent

    try:
        seconds = float(request.GET.get("s", "0.5"))
        timeout = float(request.GET.get("timeout", "0.1"))
    except ValueError:
        return HttpResponseBadRequest("s and timeout are seconds\n")
    timed_out = False
    with connection.cursor() as cursor:
        try:
            with gevent.Timeout(timeout):
                cursor.execute("SELECT SLEEP(%s), 'interrupted'", [seconds])
                cursor.fetchall()
        except gevent.Timeout:
            timed_out = True
    return JsonResponse({"timed_out": timed_out, "pid": os.getpid()})


def reprs(request):
    """repr() of the pool, the pooled connection and Django's wrapper."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchall()
        raw = connection.connection
        return JsonResponse(
            {
                "pool": repr(connection.pool),
                "connection": repr(raw),
                "wrapper": repr(connection),
                "stats": connection.pool.get_stats(),
            }
        )


def bad_sql(request):
    """A query the server refuses: Django answers 500."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT no_such_column FROM greenpool_demo_item")
    return JsonResponse({})  # pragma: no cover - never reached

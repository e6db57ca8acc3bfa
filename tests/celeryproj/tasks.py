"""The tasks. Each one returns the worker process's pid and the server
session (CONNECTION_ID()) it ran on, which is how the tests count connections.
Tables: greenpool_celery_item (id, hits) and greenpool_celery_tick (conn, pid),
made by tests/support/celery_worker.prepare_database."""

import os

from celery import shared_task
from django.db import connection, transaction


def _session() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        (conn_id,) = cursor.fetchone()
    return {"pid": os.getpid(), "conn": conn_id}


@shared_task(name="celeryproj.reads")
def reads(ids: list[int]) -> dict:
    """Primary-key reads, then the session they ran on."""
    with connection.cursor() as cursor:
        for item_id in ids:
            cursor.execute("SELECT id, hits FROM greenpool_celery_item WHERE id = %s", [item_id])
            cursor.fetchone()
    return _session()


@shared_task(name="celeryproj.echo")
def echo(value: int) -> dict:
    """SELECT value: a connection that still held another statement's reply
    would answer with that one."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s", [value])
        (answer,) = cursor.fetchone()
    return {**_session(), "value": answer}


@shared_task(name="celeryproj.update_then_sleep")
def update_then_sleep(item_id: int, seconds: float) -> dict:
    """In one transaction: mark a row, then a slow statement (where a time limit
    strikes). The mark must never be committed."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE greenpool_celery_item SET hits = hits + 1 WHERE id = %s", [item_id])
            cursor.execute("SELECT SLEEP(%s)", [seconds])
    return _session()


@shared_task(name="celeryproj.sleep_query")
def sleep_query(seconds: float) -> dict:
    """A slow statement outside a transaction."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT SLEEP(%s)", [seconds])
    return _session()


@shared_task(name="celeryproj.record_tick")
def record_tick() -> None:
    """Sent by beat: one row per run, with its session."""
    session = _session()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO greenpool_celery_tick (conn, pid) VALUES (%s, %s)", [session["conn"], session["pid"]]
        )


@shared_task(name="celeryproj.big_read")
def big_read() -> dict:
    """A million-row result (the item table joined with itself three times),
    read by PyMySQL for seconds: a time limit strikes while it parses rows
    between reads, not inside one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.id, b.id, c.id FROM greenpool_celery_item a, greenpool_celery_item b, greenpool_celery_item c"
        )
        rows = len(cursor.fetchall())
    return {**_session(), "rows": rows}

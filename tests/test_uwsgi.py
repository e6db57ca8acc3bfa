"""uWSGI in gevent mode with the ENGINE swap alone: one bounded pool per worker process.

The real uwsgi binary (setup.cfg's test extra builds it) runs
``--http-socket --master --processes 2 --gevent N --gevent-early-monkey-patch`` over
tests/djproject (max_size 4) through tests/support/uwsgi_app.py, which reads the
database while it is imported. greenpool.launch.loadgen sends the load (500 clients in
the full form, 100 with GREENPOOL_LOAD_SCALE=ci) to /conn?sleep=..., which holds its
connection for a few milliseconds so that the pools fill up; a thread counts the
server connections to the test's own database in information_schema.PROCESSLIST.

Both of uWSGI's ways to load the app are covered: its default (loaded in the master,
whose idle pooled connection the forked workers inherit and must never use) and
``--lazy-apps`` (loaded in each worker), under a steady load, across a graceful
reload (--touch-reload) and across --max-requests recycling. The wrong flag
(--gevent-monkey-patch) gets greenpool's message naming the right one.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.serve import loadgen, scaled
from tests.support.uwsgi_server import DJPROJECT_MAX_SIZE, ConnectionWatch, UwsgiProcess, uwsgi_binary

pytestmark = [pytest.mark.mysql, pytest.mark.load]

PROCESSES = 2
CLIENTS = scaled(500, 100)
# Each worker serves up to this many clients at once (uWSGI's async cores).
CORES = 1000
# Long enough that every request waits for a connection of a full pool.
HOLD = "/conn?sleep=0.02"
MODES = {"default": (), "lazy-apps": ("--lazy-apps",)}


@pytest.fixture(scope="module")
def database(mysql_admin):
    if uwsgi_binary() is None:
        pytest.fail("no uwsgi binary: setup.cfg's test extra installs it (pip install -e '.[test]')", pytrace=False)
    name = f"gp_uwsgi_{os.getpid()}"
    with mysql_admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
    yield name
    with mysql_admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{name}`")


@pytest.fixture(scope="module")
def mysql_admin(mysql_params):
    from tests.support import mysqlenv

    conn = mysqlenv.connect(mysql_params)
    try:
        yield conn
    finally:
        conn.close()


def serve(
    tmp_path: Path, mysql_params: dict[str, Any], database: str, mode: str, *extra: str, early_patch: bool = True
) -> UwsgiProcess:
    return UwsgiProcess(
        tmp_path,
        mysql_params,
        database,
        *MODES[mode],
        *extra,
        processes=PROCESSES,
        cores=CORES,
        early_patch=early_patch,
    )


def load(server: UwsgiProcess, requests: int, duration: float) -> dict[str, Any]:
    # uWSGI's --http-socket closes the connection after each answer.
    return loadgen([f"http://127.0.0.1:{server.port}{HOLD}"], CLIENTS, requests, duration, "--no-keepalive")


def assert_served_everything(result: dict[str, Any], server: UwsgiProcess) -> None:
    assert result["failed"] == 0 and set(result["statuses"]) == {"200"}, (result, server.log()[-4000:])
    log = server.log()
    for trouble in (
        "gone away",
        "can only be used in that same thread",
        "monkey-patched",
        "Too many connections",
        "Traceback",
    ):
        assert trouble not in log, f"{trouble!r} in uwsgi's log:\n{log[-6000:]}"


def assert_one_bounded_pool_per_worker(server: UwsgiProcess, watch: ConnectionWatch, mode: str) -> None:
    used, loaded = server.used_ids(), server.loaded_ids()
    assert used, server.log()[-4000:]
    master = server.proc.pid  # type: ignore[union-attr]
    if mode == "default":
        # Every app load happened in the master (a reload loads it again there).
        assert set(loaded) == {master}, (loaded, master)
    else:
        # Each worker loaded it itself (one spawned just before the stop may have served nothing).
        assert loaded and master not in loaded, (loaded, master)
    # No connection served two processes, and none that the master opened served a worker.
    owners: dict[int, int] = {}
    for pid, ids in used.items():
        assert len(ids) <= DJPROJECT_MAX_SIZE, (pid, ids)
        for thread_id in ids:
            assert thread_id not in owners, f"connection {thread_id} used by pids {owners[thread_id]} and {pid}"
            owners[thread_id] = pid
    assert not set(owners) & loaded.get(master, set()), (owners, loaded)
    # The pools were full (the load held every connection), and the server never saw
    # more than processes x max_size of the workers' connections at once.
    assert max(len(ids) for ids in used.values()) == DJPROJECT_MAX_SIZE, used
    assert 0 < watch.most(excluding=loaded.get(master, set())) <= PROCESSES * DJPROJECT_MAX_SIZE, watch.snapshots


@pytest.mark.parametrize("mode", list(MODES))
def test_each_worker_keeps_one_bounded_pool_at_hundreds_of_clients(tmp_path, mysql_params, database, mode):
    with serve(tmp_path, mysql_params, database, mode) as server, ConnectionWatch(mysql_params, database) as watch:
        result = load(server, requests=scaled(6000, 1200), duration=scaled(20, 6))
    assert_served_everything(result, server)
    assert_one_bounded_pool_per_worker(server, watch, mode)
    assert len(result["workers"]) == PROCESSES, result["workers"]


@pytest.mark.parametrize("mode", list(MODES))
def test_a_graceful_reload_under_load_fails_no_request_and_stays_within_the_bound(
    tmp_path, mysql_params, database, mode
):
    with serve(tmp_path, mysql_params, database, mode) as server, ConnectionWatch(mysql_params, database) as watch:
        results: list[dict[str, Any]] = []
        loader = threading.Thread(target=lambda: results.append(load(server, 1_000_000, scaled(12, 6))))
        loader.start()
        try:
            server.wait_log(r"WSGI app 0 \(mountpoint=''\) ready", count=1 if mode == "default" else PROCESSES)
            threading.Event().wait(1.5)  # the load is running
            server.reload()
            # Two new workers, both ready, while the load goes on.
            server.wait_log(r"spawned uWSGI worker", count=2 * PROCESSES, timeout=40)
        finally:
            loader.join(60)
        assert not loader.is_alive() and results, "the load client did not end within 60 s"
    result = results[0]
    assert_served_everything(result, server)
    assert_one_bounded_pool_per_worker(server, watch, mode)
    # Requests were served by the workers before the reload and by those after it.
    assert len(result["workers"]) == 2 * PROCESSES, (result["workers"], server.log()[-4000:])


@pytest.mark.parametrize("mode", list(MODES))
def test_max_requests_recycles_workers_without_failing_a_request(tmp_path, mysql_params, database, mode):
    # uWSGI recycles a worker only once it has lived --min-worker-lifetime (10 s by default).
    recycling = ("--max-requests", "150", "--min-worker-lifetime", "1")
    with (
        serve(tmp_path, mysql_params, database, mode, *recycling) as server,
        ConnectionWatch(mysql_params, database) as watch,
    ):
        result = load(server, requests=scaled(4000, 1500), duration=scaled(30, 15))
    assert_served_everything(result, server)
    assert_one_bounded_pool_per_worker(server, watch, mode)
    assert "Respawned uWSGI worker" in server.log(), server.log()[-4000:]
    assert len(result["workers"]) > PROCESSES, result["workers"]


def test_the_late_monkey_patch_flag_gets_a_message_that_names_the_right_one(tmp_path, mysql_params, database):
    with serve(tmp_path, mysql_params, database, "default", early_patch=False) as server:
        answers = [server.get("/conn")[0] for _ in range(20)]
    log = server.log()
    assert set(answers) == {500}, answers
    assert "The object with alias 'default' was created in thread id" not in log, log[-6000:]  # Django's error
    # One line per worker process, not one per request.
    fix = "--gevent-early-monkey-patch instead of --gevent-monkey-patch"
    lines = [line for line in log.splitlines() if fix in line]
    assert 1 <= len(lines) <= PROCESSES, log[-6000:]

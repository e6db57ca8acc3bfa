"""Real Celery workers (tests/celeryproj, started by tests/support/celery_worker.py)
against a real Redis and the shared MariaDB: each worker process keeps one
bounded greenpool pool across tasks, under every Celery pool type, through time
limits, eager mode and beat. Connections are counted on the server: every task
returns its CONNECTION_ID(), and PROCESSLIST is read for the project's database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pymysql
import pytest
from billiard.exceptions import SoftTimeLimitExceeded

from greenpool import mysql
from greenpool.pool import Pool
from tests.support import redis_server
from tests.support.celery_worker import (
    ITEMS,
    ROOT,
    CeleryBeat,
    CeleryWorker,
    eventlet_installed,
    open_transactions,
    per_process,
    project_database,
    query,
    run_eager,
    server_sessions,
    wait_until,
)
from tests.support.serve import scaled

pytestmark = pytest.mark.mysql

MAX_SIZE = 4
TASKS = scaled(full=500, ci=100)

# pool type -> concurrency: more task slots than max_size where they share a pool.
POOL_CONCURRENCY = {"prefork": 2, "gevent": 20, "eventlet": 20, "threads": 8, "solo": 1}
# Pool types whose task slots are processes, each with its own pool.
ONE_PROCESS_PER_SLOT = {"prefork"}


@pytest.fixture(scope="module")
def broker():
    with redis_server.redis_url() as url:
        yield url


@pytest.fixture
def database(mysql_params):
    with project_database(mysql_params) as name:
        yield name


def test_importing_greenpool_and_its_backend_does_not_import_celery():
    script = (
        "import sys\n"
        "import greenpool, greenpool.pool, greenpool.registry, greenpool.mysql\n"
        "from greenpool.backends.mysql import base\n"
        "print(sorted(m for m in sys.modules if m == 'celery' or m.startswith('celery.')))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.celeryproj.settings"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"importing greenpool imported {done.stdout.strip()}"


def test_a_process_that_keeps_its_pools_ignores_close_pool_until_close_all_and_its_forks_do_not():
    # In a fresh process: the registry's state is process-wide.
    script = """
import os
from greenpool import registry
from greenpool.pool import Pool

def make():
    return Pool(lambda: None, max_size=1, name="kept")  # never checked out: never connects

pool = registry.get_pool("kept", "fp", make)
registry.keep_pools_for_process()
registry.close_pool("kept")
assert not pool.closed, "close_pool closed a kept pool"
pid = os.fork()
if pid == 0:
    child_pool = registry.get_pool("kept", "fp", make)
    registry.close_pool("kept")
    os._exit(0 if child_pool.closed and not registry.pools_kept_for_process() else 1)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, "the forked child inherited the kept state"
registry.close_all()
assert pool.closed, "close_all left a kept pool open"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def reads_args(count: int) -> list[list]:
    return [[[(i % ITEMS) + 1, ((i + 1) % ITEMS) + 1, ((i + 2) % ITEMS) + 1]] for i in range(count)]


def assert_pools_kept_and_bounded(results: list[dict], worker: CeleryWorker) -> dict[int, set[int]]:
    sessions = per_process(results)
    processes = worker.concurrency if worker.pool in ONE_PROCESS_PER_SLOT else 1
    assert len(sessions) <= processes, f"tasks ran in {len(sessions)} processes, expected at most {processes}"
    for pid, ids in sessions.items():
        # A prefork or solo process runs one task at a time: one connection for all of them.
        bound = 1 if worker.pool in ONE_PROCESS_PER_SLOT or worker.concurrency == 1 else MAX_SIZE
        assert len(ids) <= bound, (
            f"-P {worker.pool}: process {pid} used {len(ids)} server connections "
            f"for {len(results)} tasks (bound {bound}): the pool was not kept across tasks"
        )
    return sessions


@pytest.mark.parametrize("pool", list(POOL_CONCURRENCY))
def test_each_worker_process_keeps_one_bounded_pool_across_tasks(pool, broker, database, mysql_params, tmp_path):
    if pool == "eventlet" and not eventlet_installed():
        pytest.skip("eventlet is not installed (setup.cfg's test extra installs it)")
    with CeleryWorker(
        broker,
        mysql_params,
        database,
        pool=pool,
        concurrency=POOL_CONCURRENCY[pool],
        workdir=tmp_path,
        max_size=str(MAX_SIZE),
    ) as worker:
        results = worker.run("celeryproj.reads", reads_args(TASKS), timeout=120)
        sessions = assert_pools_kept_and_bounded(results, worker)
        used = set().union(*sessions.values())
        # Between tasks the pool holds its connections open: the server still has them.
        assert used <= server_sessions(mysql_params, database), "a connection was closed between tasks"
    # Gone with the worker's processes (each closes its pools at exit).
    wait_until(
        "the worker's server sessions end after it stopped",
        lambda: not server_sessions(mysql_params, database),
        timeout=15,
    )


def test_prefork_child_never_uses_the_connection_its_parent_opened(broker, database, mysql_params, tmp_path):
    record = tmp_path / "parent-session"
    with CeleryWorker(
        broker, mysql_params, database, pool="prefork", concurrency=2, workdir=tmp_path, parent_session_file=str(record)
    ) as worker:
        parent_pid, parent_conn = map(int, record.read_text().split())
        results = worker.run("celeryproj.reads", reads_args(50), timeout=60)
        assert parent_pid not in {r["pid"] for r in results}, "tasks ran in the worker's main process"
        assert parent_conn not in {r["conn"] for r in results}, "a child ran a task on its parent's connection"
        assert_pools_kept_and_bounded(results, worker)
        # The children dropped their inherited copy without ending the parent's session.
        assert parent_conn in server_sessions(mysql_params, database), "a child closed its parent's session"


def aborted_clients(db: dict) -> int:
    """Sessions the server saw end without the client's COM_QUIT (its socket just closed)."""
    return int(query(db, "SHOW GLOBAL STATUS LIKE 'Aborted_clients'")[0][1])


def test_children_close_their_pools_when_they_exit(broker, throwaway_mariadb, tmp_path):
    # A private server: its Aborted_clients counts only this worker's sessions.
    db = throwaway_mariadb.params()
    with project_database(db) as database:
        aborted_before = aborted_clients(db)
        with CeleryWorker(
            broker, db, database, pool="prefork", concurrency=1, workdir=tmp_path, args=("--max-tasks-per-child", "10")
        ) as worker:
            results = worker.run("celeryproj.reads", reads_args(30), timeout=60)
            sessions = per_process(results)
            assert len(sessions) >= 3, f"expected children to be replaced every 10 tasks, saw {len(sessions)}"
            assert all(len(ids) == 1 for ids in sessions.values()), sessions
            last = results[-1]["conn"]
            wait_until(
                "the exited children's sessions end", lambda: server_sessions(db, database) <= {last}, timeout=15
            )
        wait_until(
            "the last child's session ends after the worker stopped",
            lambda: not server_sessions(db, database),
            timeout=15,
        )
        # Each child said goodbye (COM_QUIT through its pool's close) rather than
        # leaving the server to find a dead socket.
        assert aborted_clients(db) == aborted_before, "a child exited without closing its pool's connections"


def test_soft_time_limit_mid_query_leaves_no_transaction_and_no_half_read_connection(
    broker, database, mysql_params, tmp_path
):
    with CeleryWorker(broker, mysql_params, database, pool="prefork", concurrency=1, workdir=tmp_path) as worker:
        child = worker.run("celeryproj.echo", [[1]], timeout=30)[0]["pid"]
        # Outside a transaction, nothing else reads the connection before its
        # checkin: one limit strikes while PyMySQL waits for a reply, one
        # while it parses a long result between two reads.
        for name in ("celeryproj.sleep_query", "celeryproj.big_read"):
            interrupted = worker.send(name, [2] if name.endswith("sleep_query") else [], soft_time_limit=0.5)
            state, error = worker.outcome(interrupted, timeout=30)
            assert state == "FAILURE" and type(error).__name__ == "SoftTimeLimitExceeded", (name, state, error)
        # Inside one: the UPDATE must never be committed.
        interrupted = worker.send("celeryproj.update_then_sleep", [7, 2], soft_time_limit=0.5)
        state, error = worker.outcome(interrupted, timeout=30)
        assert state == "FAILURE" and type(error).__name__ == "SoftTimeLimitExceeded", (state, error)
        # The next tasks, in the same child, get their own answers: no reply of
        # an interrupted SLEEP is read as theirs.
        answers = worker.run("celeryproj.echo", [[1000 + i] for i in range(5)], timeout=30)
        assert [a["value"] for a in answers] == [1000 + i for i in range(5)]
        assert {a["pid"] for a in answers} == {child}, "the child did not survive its soft time limits"
        wait_until(
            "the interrupted transaction ends on the server",
            lambda: not open_transactions(mysql_params, database),
            timeout=15,
        )
    assert query(mysql_params, f"SELECT hits FROM `{database}`.greenpool_celery_item WHERE id = 7") == [(0,)], (
        "the interrupted task's UPDATE was committed"
    )


DIGITS = "(" + " UNION ALL ".join(f"SELECT {d} AS i" for d in range(10)) + ")"


def test_soft_time_limit_between_two_reads_of_a_result_sends_the_connection_to_discard(mysql_params):
    """Where the worker test above cannot aim: Celery's prefork pool raises
    SoftTimeLimitExceeded (an Exception) from its SIGUSR1 handler, which may
    run while PyMySQL parses rows between two reads; the rest of the reply is
    then still unread, and the connection must not count as clean. The signal
    is sent from the integer converter at the 1000th row, so it lands there."""
    rows_parsed = [0]

    def int_that_signals(value: bytes) -> int:
        rows_parsed[0] += 1
        if rows_parsed[0] == 1000:
            os.kill(os.getpid(), signal.SIGUSR1)  # the handler runs before this returns
        return int(value)

    def soft_limit(*_: object) -> None:
        raise SoftTimeLimitExceeded()

    conv = {**pymysql.converters.conversions, pymysql.constants.FIELD_TYPE.LONGLONG: int_that_signals}
    pool = Pool(
        mysql.connect_factory({**mysql_params, "autocommit": True, "conv": conv}),
        max_size=1,
        name="soft-limit",
        reset=mysql.make_reset(False),
    )
    previous = signal.signal(signal.SIGUSR1, soft_limit)
    try:
        conn = pool.getconn()
        first_session = conn.thread_id()
        with conn.cursor() as cur, pytest.raises(SoftTimeLimitExceeded):
            # 100,000 rows of a BIGINT, far more than one read holds.
            cur.execute(
                "SELECT a.i + 10 * b.i + 100 * c.i + 1000 * d.i + 10000 * e.i FROM "
                + ", ".join(f"{DIGITS} {name}" for name in "abcde")
            )
        assert rows_parsed[0] == 1000 and conn.open
        with pytest.raises(pymysql.err.InterfaceError, match="interrupted mid-command"):
            conn.query("SELECT 1")  # would read the rest of the 100,000 rows as its answer
        pool.putconn(conn)
        assert pool.get_stats()["returns_bad"] == 1, "the half-read connection went back to the pool"
        with pool.connection() as fresh, fresh.cursor() as cur:
            cur.execute("SELECT 'fresh', CONNECTION_ID()")
            answer, session = cur.fetchone()
        assert answer == "fresh" and session != first_session
    finally:
        signal.signal(signal.SIGUSR1, previous)
        pool.close()


def test_hard_time_limit_kills_the_child_and_the_next_task_is_served(broker, database, mysql_params, tmp_path):
    with CeleryWorker(broker, mysql_params, database, pool="prefork", concurrency=1, workdir=tmp_path) as worker:
        before = worker.run("celeryproj.echo", [[1]], timeout=30)[0]
        killed = worker.send("celeryproj.update_then_sleep", [9, 3], time_limit=1)
        state, error = worker.outcome(killed, timeout=30)
        assert state == "FAILURE" and type(error).__name__ == "TimeLimitExceeded", (state, error)
        after = worker.run("celeryproj.echo", [[2]], timeout=60)[0]
        assert after["value"] == 2 and after["pid"] != before["pid"], (before, after)
        wait_until(
            "the killed child's transaction ends on the server",
            lambda: not open_transactions(mysql_params, database),
            timeout=15,
        )
        wait_until(
            "the killed child's session ends on the server",
            lambda: before["conn"] not in server_sessions(mysql_params, database),
            timeout=15,
        )
    assert query(mysql_params, f"SELECT hits FROM `{database}`.greenpool_celery_item WHERE id = 9") == [(0,)], (
        "the killed task's UPDATE was committed"
    )


def test_time_limit_under_gevent_interrupts_the_query_and_the_next_tasks_are_served(
    broker, database, mysql_params, tmp_path
):
    # Celery's gevent pool enforces time_limit with a gevent.Timeout in the task's
    # greenlet (soft limits are not enforced there): the process lives on.
    with CeleryWorker(
        broker, mysql_params, database, pool="gevent", concurrency=10, workdir=tmp_path, max_size=str(MAX_SIZE)
    ) as worker:
        child = worker.run("celeryproj.echo", [[1]], timeout=30)[0]["pid"]
        interrupted = [worker.send("celeryproj.update_then_sleep", [11 + i, 2], time_limit=0.5) for i in range(3)]
        for result in interrupted:
            state, error = worker.outcome(result, timeout=30)
            assert state == "FAILURE" and type(error).__name__ == "TimeLimitExceeded", (state, error)
        answers = worker.run("celeryproj.echo", [[2000 + i] for i in range(20)], timeout=30)
        assert [a["value"] for a in answers] == [2000 + i for i in range(20)]
        assert {a["pid"] for a in answers} == {child}
        assert len({a["conn"] for a in answers}) <= MAX_SIZE
        wait_until(
            "the interrupted transactions end on the server",
            lambda: not open_transactions(mysql_params, database),
            timeout=15,
        )
    assert query(
        mysql_params, f"SELECT SUM(hits) FROM `{database}`.greenpool_celery_item WHERE id BETWEEN 11 AND 13"
    ) == [(0,)], "an interrupted task's UPDATE was committed"


def test_eager_tasks_run_in_the_calling_process_on_its_pool(broker, database, mysql_params):
    values = list(range(20))
    results = run_eager(mysql_params, database, broker, values)
    assert [r["value"] for r in results] == values
    assert len({r["pid"] for r in results}) == 1
    assert len({r["conn"] for r in results}) <= MAX_SIZE


def test_beat_schedules_tasks_that_the_worker_runs_on_its_kept_pool(broker, database, mysql_params, tmp_path):
    with (
        CeleryWorker(broker, mysql_params, database, pool="prefork", concurrency=1, workdir=tmp_path) as worker,
        CeleryBeat(broker, mysql_params, database, worker.queue, tmp_path) as beat,
    ):
        ticks = wait_until(
            "beat's record_tick ran 4 times",
            lambda: (
                len(rows := query(mysql_params, f"SELECT conn, pid FROM `{database}`.greenpool_celery_tick")) >= 4
                and rows
            ),
            timeout=30,
        )
        assert beat.proc is not None and beat.proc.poll() is None, "celery beat exited"
    assert len({conn for conn, _ in ticks}) == 1, f"beat's tasks ran on {len(set(ticks))} connections: {ticks}"

"""Unit tests of greenpool/pool.py on a fake DB-API, under gevent and threads."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import gevent
import gevent.event
import gevent.socket
import pytest
from pymysql.err import OperationalError

from greenpool import Pool, PoolClosed, PoolTimeout, TooManyRequests
from greenpool.errors import PoolError
from tests.fakedb import FakeDB, FakeError


class Gevent:
    mode = "gevent"
    sleep = staticmethod(gevent.sleep)

    def spawn(self, fn, *args):
        return gevent.spawn(fn, *args)

    def join(self, tasks, timeout=30):
        gevent.joinall(tasks, timeout=timeout, raise_error=False)
        assert all(t.dead for t in tasks), "tasks did not finish in time"


class Threads:
    mode = "threads"
    sleep = staticmethod(time.sleep)

    def spawn(self, fn, *args):
        thread = threading.Thread(target=fn, args=args, daemon=True)
        thread.start()
        return thread

    def join(self, tasks, timeout=30):
        deadline = time.monotonic() + timeout
        for t in tasks:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in tasks), "tasks did not finish in time"


@pytest.fixture(params=[Gevent, Threads], ids=["gevent", "threads"])
def conc(request):
    return request.param()


@pytest.fixture
def db(conc):
    return FakeDB(sleep=conc.sleep)


def make_pool(db, conc, **options):
    options.setdefault("name", "test")
    options.setdefault("timeout", 5)
    return Pool(db.connect, concurrency=conc.mode, **options)


def assert_its_one_slot_is_free(pool, gone=None):
    """A max_size=1 pool hands out its slot at once, as a new connection (not ``gone``)."""
    fresh = pool.getconn(timeout=1)
    assert fresh is not gone
    pool.putconn(fresh)


def test_pool_errors_are_pymysql_operational_errors():
    for cls in (PoolError, PoolTimeout, TooManyRequests, PoolClosed):
        assert issubclass(cls, OperationalError)


@pytest.mark.parametrize(
    "option, value",
    [
        ("max_size", 0),
        ("max_size", "5"),
        ("min_size", -1),
        ("min_size", 11),  # above max_size=10
        ("timeout", 0),
        ("max_waiting", -1),
        ("max_lifetime", 0),
        ("max_idle", -5),
        ("keepalive", 0),
        ("leak_threshold", "x"),
        ("concurrency", "fibers"),
        ("check", 42),
    ],
)
def test_invalid_option_is_rejected_with_its_name(option, value):
    with pytest.raises(ValueError, match=rf"invalid pool option {option}="):
        Pool(lambda: None, **{option: value})


def test_getconn_and_putconn_reuse_one_connection(db, conc):
    pool = make_pool(db, conc, max_size=2)
    conn = pool.getconn()
    pool.putconn(conn)
    assert pool.getconn() is conn
    assert db.connects == 1
    pool.close()


def test_never_more_than_max_size_even_when_connect_yields(db, conc):
    db.connect_hangs = 0.01
    pool = make_pool(db, conc, max_size=5, timeout=60)
    done = []

    def work():
        with pool.connection() as conn:
            conn.query()
            conc.sleep(0)
        done.append(1)

    n = 1000 if conc.mode == "gevent" else 200
    tasks = [conc.spawn(work) for _ in range(n)]
    conc.join(tasks, timeout=120)
    assert len(done) == n
    assert db.max_live <= 5
    stats = pool.get_stats()
    assert stats["pool_size"] <= 5 and stats["requests_num"] == n
    pool.close()


def test_waiters_are_served_fifo_and_handed_the_returned_connection(db, conc):
    pool = make_pool(db, conc, max_size=1)
    held = pool.getconn()
    order = []
    got = {}

    def wait(i):
        conn = pool.getconn()
        order.append(i)
        got[i] = conn
        pool.putconn(conn)

    tasks = []
    for i in range(5):
        tasks.append(conc.spawn(wait, i))
        conc.sleep(0.02)  # queue them in a known order
    assert pool.get_stats()["requests_waiting"] == 5
    pool.putconn(held)
    conc.join(tasks)
    assert order == [0, 1, 2, 3, 4]
    assert all(conn is held for conn in got.values())
    assert db.connects == 1
    pool.close()


def test_connection_handed_to_a_waiter_counts_as_in_use_at_once(db, conc):
    pool = make_pool(db, conc, max_size=1)
    held = pool.getconn()
    waiter = conc.spawn(lambda: pool.putconn(pool.getconn()))
    deadline = time.monotonic() + 5
    while pool.get_stats()["requests_waiting"] < 1 and time.monotonic() < deadline:
        conc.sleep(0.005)
    pool.putconn(held)
    # Before the waiter has run (gevent: nothing yielded since the handover),
    # the connection is its, not idle and not lost from the stats.
    stats = pool.get_stats()
    assert (stats["pool_in_use"], stats["pool_available"], stats["pool_size"]) == (1, 0, 1)
    conc.join([waiter])
    stats = pool.get_stats()
    assert (stats["pool_in_use"], stats["pool_available"]) == (0, 1)
    pool.close()


def test_hand_overs_let_ready_sockets_run_between_them():
    # A holder handed the connection may run its whole request without
    # blocking (the database answered before it read) and hand over to the
    # next waiter. Such a chain must not keep greenlets whose sockets are ready
    # waiting: each hand-over waits for the hub's next poll.
    db = FakeDB(sleep=gevent.sleep)
    pool = Pool(db.connect, max_size=1, timeout=5, concurrency="gevent")
    held = pool.getconn()
    served = []

    def holder(i):
        conn = pool.getconn()
        served.append(i)
        pool.putconn(conn)

    holders = [gevent.spawn(holder, i) for i in range(20)]
    gevent.sleep(0.02)
    assert pool.get_stats()["requests_waiting"] == 20
    a, b = gevent.socket.socketpair()
    served_before_read = []
    reader = gevent.spawn(lambda: (a.recv(1), served_before_read.append(len(served))))
    gevent.sleep(0.01)  # the reader waits on its socket
    b.sendall(b"x")  # ready from now on...
    pool.putconn(held)  # ...and the chain of hand-overs starts
    gevent.joinall(holders + [reader], timeout=5)
    a.close()
    b.close()
    assert served == list(range(20))
    assert served_before_read and served_before_read[0] <= 2, (
        f"the ready socket was read only after {served_before_read} hand-overs"
    )
    pool.close()


def test_gevent_waiter_whose_timeout_fires_before_its_wake_up_keeps_the_connection():
    # The hand-over wakes the waiter after the hub's next poll, when the waiter's
    # timeout may be due too. Whichever of the two runs first, the waiter must end
    # up with the connection it was given, and no timeout counted.
    db = FakeDB(sleep=gevent.sleep)
    pool = Pool(db.connect, max_size=1, timeout=5, concurrency="gevent")
    held = pool.getconn()
    got, errors = [], []

    def wait():
        try:
            got.append(pool.getconn(timeout=0.05))
        except PoolTimeout as exc:
            errors.append(exc)

    waiter = gevent.spawn(wait)
    gevent.sleep(0.01)  # queued
    end = time.monotonic() + 0.1
    while time.monotonic() < end:  # past the waiter's timeout, without yielding
        pass
    pool.putconn(held)  # handed over; both its timeout and its wake-up are due
    waiter.join(timeout=5)
    assert (got, errors) == ([held], [])
    stats = pool.get_stats()
    assert (stats["pool_in_use"], stats["pool_available"], stats["requests_timeouts"]) == (1, 0, 0)
    pool.putconn(held)
    pool.close()


def test_waiter_served_as_its_wait_times_out_keeps_the_connection():
    # Threads: the giver may hand a connection over between the moment the
    # waiter's wait gives up and the moment it leaves the queue. The waiter must
    # then use it, not also pass it on (two holders of one connection).
    from greenpool._compat import ThreadWaiter

    class LateWaiter(ThreadWaiter):
        def wait(self, timeout):
            self._event.wait(5)  # served...
            return False  # ...but reports the timeout it hit at the same instant

    db = FakeDB(sleep=time.sleep)
    pool = Pool(db.connect, max_size=1, timeout=5, concurrency="threads")
    pool._prims.Waiter = LateWaiter
    held = pool.getconn()
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.getconn()), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 5
    while pool.get_stats()["requests_waiting"] < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    pool.putconn(held)
    waiter.join(5)
    assert got == [held]
    stats = pool.get_stats()
    assert (stats["pool_in_use"], stats["pool_available"], stats["requests_timeouts"]) == (1, 0, 0)
    pool.putconn(held)
    assert pool.get_stats()["pool_available"] == 1
    pool.close()


def test_pool_timeout_names_pool_size_usage_and_wait(db, conc):
    pool = make_pool(db, conc, max_size=2, name="orders")
    a, b = pool.getconn(), pool.getconn()
    started = time.monotonic()
    with pytest.raises(PoolTimeout) as info:
        pool.getconn(timeout=0.2)
    assert time.monotonic() - started >= 0.19
    message = str(info.value)
    for part in ("'orders'", "max_size=2", "in use=2", "waiting=0", "after waiting 0.2"):
        assert part in message
    assert pool.get_stats()["requests_timeouts"] == 1
    assert pool.get_stats()["requests_waiting"] == 0
    pool.putconn(a)
    pool.putconn(b)
    pool.close()


def test_too_many_requests_past_max_waiting(db, conc):
    pool = make_pool(db, conc, max_size=1, max_waiting=2)
    held = pool.getconn()

    def wait_and_return():
        pool.putconn(pool.getconn(timeout=2))

    waiters = [conc.spawn(wait_and_return) for _ in range(2)]
    conc.sleep(0.05)
    with pytest.raises(TooManyRequests, match="max_waiting=2"):
        pool.getconn()
    pool.putconn(held)
    conc.join(waiters)
    pool.close()


def test_closed_pool_raises_pool_closed_to_callers_and_waiters(db, conc):
    pool = make_pool(db, conc, max_size=1)
    held = pool.getconn()
    errors = []

    def wait():
        try:
            pool.getconn(timeout=5)
        except PoolClosed as exc:
            errors.append(exc)

    task = conc.spawn(wait)
    conc.sleep(0.05)
    pool.close()
    conc.join([task])
    assert len(errors) == 1
    with pytest.raises(PoolClosed):
        pool.getconn()
    pool.putconn(held)  # a late return is closed, not reused
    assert held.closed


def test_connect_failure_reaches_the_caller_and_loses_no_slot(db, conc):
    pool = make_pool(db, conc, max_size=2)
    db.connect_fails = True
    for _ in range(5):
        with pytest.raises(FakeError):
            pool.getconn()
    assert pool.get_stats()["pool_size"] == 0
    assert pool.get_stats()["connections_errors"] == 5
    db.connect_fails = False  # the server is back
    a, b = pool.getconn(), pool.getconn()
    assert a is not b
    pool.putconn(a)
    pool.putconn(b)
    pool.close()


def test_failed_connect_passes_its_slot_to_a_waiter(db, conc):
    pool = make_pool(db, conc, max_size=1)
    db.connect_hangs = 0.1
    db.connect_fails = True
    results = []

    def first():
        try:
            pool.getconn()
        except FakeError:
            results.append("failed")
            db.connect_fails = False  # the server is back for the waiter

    def second():
        conn = pool.getconn(timeout=5)
        results.append("ok")
        pool.putconn(conn)

    t1 = conc.spawn(first)
    conc.sleep(0.03)  # first holds the only slot, connecting
    t2 = conc.spawn(second)
    conc.join([t1, t2])
    assert sorted(results) == ["failed", "ok"]
    assert pool.get_stats()["pool_size"] == 1
    pool.close()


def test_hanging_connect_killed_by_timeout_releases_its_slot():
    db = FakeDB(sleep=gevent.sleep)
    db.connect_hangs = 10
    pool = Pool(db.connect, max_size=1, timeout=5, concurrency="gevent")
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.1):
            pool.getconn()
    assert pool.get_stats()["pool_size"] == 0
    db.connect_hangs = 0
    assert_its_one_slot_is_free(pool)
    pool.close()


def test_killed_waiter_loses_no_slot():
    db = FakeDB(sleep=gevent.sleep)
    pool = Pool(db.connect, max_size=1, timeout=5, concurrency="gevent")
    held = pool.getconn()
    waiter = gevent.spawn(pool.getconn)
    gevent.sleep(0.02)
    waiter.kill(block=True, timeout=1)
    assert pool.get_stats()["requests_waiting"] == 0
    pool.putconn(held)
    assert pool.get_stats()["pool_available"] == 1
    assert pool.getconn(timeout=0.5) is held
    pool.close()


def test_waiter_killed_as_it_is_handed_a_connection_passes_it_on():
    db = FakeDB(sleep=gevent.sleep)
    pool = Pool(db.connect, max_size=1, timeout=5, concurrency="gevent")
    held = pool.getconn()
    waiter = gevent.spawn(pool.getconn)
    gevent.sleep(0.02)
    waiter.kill(block=False)  # the kill is scheduled first...
    pool.putconn(held)  # ...then the connection is handed to the waiter
    waiter.join(timeout=1)
    assert isinstance(waiter.value, gevent.GreenletExit), "the waiter was killed before it could run"
    assert pool.get_stats()["pool_available"] == 1
    assert pool.get_stats()["pool_in_use"] == 0
    pool.close()


def test_connection_of_a_holder_killed_mid_use_is_discarded():
    db = FakeDB(sleep=gevent.sleep)
    db.query_hangs = 10
    pool = Pool(db.connect, max_size=1, timeout=5, concurrency="gevent")
    seen = []

    def use():
        with pool.connection() as conn:
            seen.append(conn)
            conn.query()

    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            use()
    assert seen[0].closed, "a connection interrupted mid-query must not be reused"
    assert pool.get_stats()["returns_bad"] == 1
    db.query_hangs = 0
    with pool.connection() as conn:
        assert conn is not seen[0]
    pool.close()


def test_exception_in_with_block_returns_connection_for_reuse(db, conc):
    pool = make_pool(db, conc)
    with pytest.raises(RuntimeError):
        with pool.connection() as conn:
            raise RuntimeError("app error")
    assert pool.getconn() is conn
    pool.close()


def test_putconn_rejects_foreign_and_double_returns(db, conc):
    pool = make_pool(db, conc)
    other = make_pool(FakeDB(), conc)
    foreign = other.getconn()
    with pytest.raises(PoolError, match="does not have checked out"):
        pool.putconn(foreign)
    conn = pool.getconn()
    pool.putconn(conn)
    with pytest.raises(PoolError, match="does not have checked out"):
        pool.putconn(conn)
    assert pool.get_stats()["pool_size"] == 1
    pool.close()
    other.close()


def test_connection_past_max_lifetime_is_replaced(db, conc):
    pool = make_pool(db, conc, max_lifetime=0.1)
    first = pool.getconn()
    pool.putconn(first)
    conc.sleep(0.15)
    second = pool.getconn()
    assert second is not first and first.closed
    assert pool.get_stats()["connections_recycled"] == 1
    pool.putconn(second)
    pool.close()


def test_idle_connections_past_max_idle_close_down_to_min_size(db, conc):
    pool = make_pool(db, conc, min_size=1, max_size=4, max_idle=0.2)
    conns = [pool.getconn() for _ in range(4)]
    for conn in conns:
        pool.putconn(conn)
    deadline = time.monotonic() + 5
    while pool.get_stats()["pool_size"] > 1 and time.monotonic() < deadline:
        conc.sleep(0.05)
    assert pool.get_stats()["pool_size"] == 1
    assert db.live == 1
    pool.close()


def test_open_fills_to_min_size(db, conc):
    pool = make_pool(db, conc, min_size=3, max_size=5)
    pool.open(wait=True, timeout=5)
    stats = pool.get_stats()
    assert stats["pool_size"] == 3 and stats["pool_available"] == 3
    pool.close()
    assert db.live == 0


def test_open_wait_raises_pool_timeout_when_server_is_down(db, conc):
    db.connect_fails = True
    pool = make_pool(db, conc, min_size=1, reconnect_backoff=0.05)
    with pytest.raises(PoolTimeout, match="could not open min_size=1"):
        pool.open(wait=True, timeout=0.3)
    pool.close()


def test_background_refill_recovers_after_server_returns(db, conc):
    db.connect_fails = True
    pool = make_pool(db, conc, min_size=2, reconnect_backoff=0.02, reconnect_backoff_max=0.1)
    pool.open()
    conc.sleep(0.2)
    db.connect_fails = False
    deadline = time.monotonic() + 5
    while pool.get_stats()["pool_available"] < 2 and time.monotonic() < deadline:
        conc.sleep(0.05)
    assert pool.get_stats()["pool_available"] == 2
    pool.close()


def test_checkout_check_replaces_a_dead_connection(db, conc):
    pool = make_pool(db, conc, check=lambda c: c.ping(), check_window=0)
    conn = pool.getconn()
    pool.putconn(conn)
    conn.alive = False  # killed by the server while idle
    fresh = pool.getconn()
    assert fresh is not conn and conn.closed
    fresh.query()
    assert pool.get_stats()["connections_lost"] == 1
    pool.close()


def test_checkout_check_is_skipped_for_a_connection_just_used(db, conc):
    pool = make_pool(db, conc, check=lambda c: c.ping(), check_window=10)
    conn = pool.getconn()
    pool.putconn(conn)
    assert pool.getconn() is conn
    assert db.pings == 0
    assert pool.get_stats()["checks_skipped"] == 1
    pool.close()


def test_failed_reset_discards_the_connection(db, conc):
    def reset(conn):
        raise FakeError("rollback failed")

    pool = make_pool(db, conc, reset=reset)
    conn = pool.getconn()
    pool.putconn(conn)
    assert conn.closed
    assert pool.get_stats()["returns_bad"] == 1
    assert pool.get_stats()["pool_size"] == 0
    pool.close()


def test_keepalive_pings_idle_connections_and_drops_dead_ones(db, conc):
    pool = make_pool(db, conc, min_size=2, max_size=2, keepalive=0.1, ping=lambda c: c.ping())
    pool.open(wait=True)
    db.made[0].alive = False
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = pool.get_stats()
        if stats["keepalive_lost"] >= 1 and stats["keepalive_num"] >= 3 and stats["pool_available"] == 2:
            break
        conc.sleep(0.05)
    stats = pool.get_stats()
    assert stats["keepalive_lost"] == 1 and stats["keepalive_num"] >= 3
    assert stats["pool_available"] == 2, "the dead connection was replaced in the background"
    pool.close()


def test_leaked_connection_is_logged_with_the_stack_that_took_it(db, conc, caplog):
    pool = make_pool(db, conc, leak_threshold=0.1)
    pool.open()

    def take_and_forget():
        return pool.getconn()

    conn = take_and_forget()
    with caplog.at_level(logging.WARNING, logger="greenpool"):
        deadline = time.monotonic() + 5
        while not pool.get_stats()["leaks_reported"] and time.monotonic() < deadline:
            conc.sleep(0.05)
    assert pool.get_stats()["leaks_reported"] == 1
    assert "take_and_forget" in caplog.text and "leak_threshold=0.1" in caplog.text
    pool.putconn(conn)
    pool.close()


def test_stats_carry_units_and_pop_resets_counters(db, conc):
    pool = make_pool(db, conc, max_size=1)
    conn = pool.getconn()
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.05)
    pool.putconn(conn)
    stats = pool.pop_stats()
    for key in (
        "pool_size",
        "pool_available",
        "requests_waiting",
        "requests_num",
        "requests_wait_ms",
        "requests_timeouts",
        "connections_num",
        "connections_errors",
        "connections_lost",
        "returns_bad",
    ):
        assert key in stats
    assert stats["requests_num"] == 1 and stats["requests_timeouts"] == 1 and stats["requests_wait_ms"] >= 0
    after = pool.get_stats()
    assert after["requests_num"] == 0 and after["pool_size"] == 1
    pool.close()


def test_close_stops_the_maintenance_task(db, conc):
    pool = make_pool(db, conc, min_size=1)
    pool.open(wait=True)
    task = pool._maintenance
    pool.close(timeout=2)
    if conc.mode == "gevent":
        assert task.dead
    else:
        assert not task.is_alive()


def test_repr_is_informative():
    pool = Pool(lambda: object(), name="reports", max_size=3, concurrency="threads")
    assert "'reports'" in repr(pool) and "size=0/3" in repr(pool)


def _run_in_a_process_that_forks(script: str) -> None:
    """Run ``script`` in a fresh interpreter (a fork from pytest's would copy its
    threads and pools); it passes when it ends without an error."""
    preamble = f"import os, sys\nsys.path.insert(0, {os.getcwd()!r})\n"
    result = subprocess.run(
        [sys.executable, "-c", preamble + textwrap.dedent(script) + "\nprint('fork-ok')\n"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "fork-ok" in result.stdout


def test_forked_child_never_reuses_parents_pool():
    _run_in_a_process_that_forks(
        """
        from greenpool import Pool
        from greenpool.errors import PoolError
        from tests.fakedb import FakeDB
        db = FakeDB()
        pool = Pool(db.connect, max_size=2, concurrency="threads")
        parent_conn = pool.getconn(); pool.putconn(parent_conn)
        pid = os.fork()
        if pid == 0:
            try:
                pool.getconn()
            except PoolError as exc:
                ok = "forked child" in str(exc)
            else:
                ok = False
            # the parent's connection was neither reused nor closed by the child
            os._exit(0 if ok and not parent_conn.closed else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert pool.getconn() is parent_conn
        """
    )


def test_forked_child_returning_a_connection_checked_out_before_the_fork_leaves_it_to_the_parent():
    _run_in_a_process_that_forks(
        """
        from greenpool import Pool
        from tests.fakedb import FakeDB
        db = FakeDB()
        resets = []
        pool = Pool(db.connect, max_size=2, concurrency="threads", reset=resets.append)
        held = pool.getconn()
        pid = os.fork()
        if pid == 0:
            pool.putconn(held)  # no PoolError, no reset, no close: the session is the parent's
            os._exit(0 if not held.closed and not resets else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        pool.putconn(held)
        assert pool.getconn() is held
        """
    )


def test_threads_share_one_pool_safely():
    db = FakeDB()
    db.connect_hangs = 0.005
    pool = Pool(db.connect, max_size=3, timeout=30, concurrency="threads")
    errors = []

    def work():
        for _ in range(50):
            try:
                with pool.connection() as conn:
                    conn.query()
            except Exception as exc:  # collected and asserted below
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert db.max_live <= 3
    stats = pool.get_stats()
    assert stats["requests_num"] == 800 and stats["pool_in_use"] == 0
    pool.close()


def test_expired_idle_connections_are_replaced_in_the_background(db, conc):
    pool = make_pool(db, conc, min_size=2, max_size=2, max_lifetime=0.3)
    pool.open(wait=True)
    first = list(db.made)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if all(c.closed for c in first) and pool.get_stats()["pool_available"] == 2:
            break
        conc.sleep(0.05)
    assert all(c.closed for c in first), "expired connections were closed without any request"
    assert pool.get_stats()["pool_available"] == 2, "and replaced up to min_size"
    assert pool.get_stats()["requests_num"] == 0
    pool.close()


def test_checkout_interrupted_during_its_health_check_loses_no_slot():
    db = FakeDB(sleep=gevent.sleep)
    pool = Pool(db.connect, max_size=1, timeout=5, check=lambda c: c.ping(), check_window=0, concurrency="gevent")
    conn = pool.getconn()
    pool.putconn(conn)
    db.ping_hangs = 10  # a network stall: the ping never answers
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            pool.getconn()
    assert conn.closed, "a half-read ping leaves the connection unusable"
    assert pool.get_stats()["pool_size"] == 0
    db.ping_hangs = 0
    assert_its_one_slot_is_free(pool, gone=conn)
    pool.close()


def test_checkin_interrupted_during_its_reset_loses_no_slot():
    # A reset costs a round trip (ROLLBACK, COM_RESET_CONNECTION); a
    # gevent.Timeout around the request can land in it.
    db = FakeDB(sleep=gevent.sleep)

    def slow_reset(conn):
        conn.ping()

    pool = Pool(db.connect, max_size=1, timeout=5, reset=slow_reset, concurrency="gevent")
    conn = pool.getconn()
    db.ping_hangs = 10
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            pool.putconn(conn)
    db.ping_hangs = 0
    assert conn.closed, "a connection whose reset was cut short is not reused"
    stats = pool.get_stats()
    assert stats["pool_size"] == 0 and stats["returns_bad"] == 1
    assert_its_one_slot_is_free(pool, gone=conn)
    pool.close()


def test_discard_interrupted_while_closing_frees_the_slot():
    db = FakeDB(sleep=gevent.sleep)
    pool = Pool(db.connect, max_size=1, timeout=5, concurrency="gevent")
    conn = pool.getconn()

    def hanging_close():
        gevent.sleep(10)  # COM_QUIT's write blocked on a stalled network

    conn.close = hanging_close
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.05):
            pool.putconn(conn, discard=True)
    assert pool.get_stats()["pool_size"] == 0
    assert_its_one_slot_is_free(pool, gone=conn)
    pool.close()


def test_keepalive_pings_do_not_stop_idle_connections_from_expiring(db, conc):
    """A ping proves a connection alive but is not use: after a burst the pool
    still shrinks to min_size at max_idle."""
    pool = make_pool(db, conc, min_size=0, max_size=3, max_idle=0.4, keepalive=0.05, ping=lambda c: c.ping())
    conns = [pool.getconn() for _ in range(3)]
    for conn in conns:
        pool.putconn(conn)
    deadline = time.monotonic() + 5
    while pool.get_stats()["pool_size"] and time.monotonic() < deadline:
        conc.sleep(0.05)
    stats = pool.get_stats()
    assert stats["keepalive_num"] >= 3, "they were pinged while idle"
    assert stats["pool_size"] == 0, "and closed at max_idle all the same"
    pool.close()


def test_set_keepalive_takes_effect_at_once(db, conc):
    pool = make_pool(db, conc, min_size=1, max_size=1, ping=lambda c: c.ping())
    pool.open(wait=True)
    conc.sleep(0.2)  # the maintenance task now sleeps for its long default interval
    pool.set_keepalive(0.1)
    deadline = time.monotonic() + 2
    while not pool.get_stats()["keepalive_num"] and time.monotonic() < deadline:
        conc.sleep(0.05)
    assert pool.get_stats()["keepalive_num"] >= 1
    pool.close()


def test_open_wait_waits_for_real_connections_not_reserved_slots(db, conc):
    """The maintenance task may hold the slot in a connect that then fails:
    open(wait=True) must not count that slot as an open connection."""
    db.connect_fails = True
    db.connect_hangs = 0.05
    pool = make_pool(db, conc, min_size=1, reconnect_backoff=0.05)
    started = time.monotonic()
    with pytest.raises(PoolTimeout, match="could not open min_size=1"):
        pool.open(wait=True, timeout=0.5)
    assert time.monotonic() - started >= 0.45
    pool.close()


def test_request_waits_for_a_transient_connect_failure_to_pass(db, conc):
    """With retry_connect, a request that finds the server away keeps trying
    (with back-off) until its timeout: an outage shorter than that costs
    latency, not an error."""
    db.connect_fails = True
    pool = make_pool(
        db, conc, max_size=1, timeout=5, reconnect_backoff=0.02, retry_connect=lambda exc: isinstance(exc, FakeError)
    )
    results = []

    def request():
        conn = pool.getconn()
        results.append(conn)
        pool.putconn(conn)

    task = conc.spawn(request)
    conc.sleep(0.3)
    assert not results and pool.get_stats()["connections_errors"] >= 2
    db.connect_fails = False  # the server is back
    conc.join([task])
    assert len(results) == 1
    pool.close()


def test_transient_connect_failure_past_the_timeout_reaches_the_caller(db, conc):
    db.connect_fails = True
    pool = make_pool(db, conc, max_size=1, reconnect_backoff=0.02, retry_connect=lambda exc: True)
    started = time.monotonic()
    with pytest.raises(FakeError):
        pool.getconn(timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 2
    assert pool.get_stats()["pool_size"] == 0
    pool.close()


def test_request_connect_retries_back_off_within_the_pools_bounds(db, conc):
    # Each wait is backoff x random(0.5 ... 1.5); backoff doubles from
    # reconnect_backoff up to 1 s, and never past reconnect_backoff_max.
    db.connect_fails = True
    pool = make_pool(
        db, conc, max_size=1, reconnect_backoff=0.01, reconnect_backoff_max=0.04, retry_connect=lambda exc: True
    )
    waits = []
    sleep = pool._prims.sleep  # this pool's own primitives object

    def recording_sleep(seconds):
        waits.append(seconds)
        sleep(seconds)

    pool._prims.sleep = recording_sleep
    with pytest.raises(FakeError):
        pool.getconn(timeout=0.5)
    pool.close()
    assert len(waits) >= 5
    assert all(0.005 <= w <= 0.04 * 1.5 for w in waits[:-1]), waits  # the last one is cut to the deadline
    assert max(waits[:-1]) > 0.02 * 1.5, "back-off grew past its start"


def test_permanent_connect_failure_is_not_retried(db, conc):
    db.connect_fails = True
    pool = make_pool(db, conc, max_size=1, retry_connect=lambda exc: False)
    started = time.monotonic()
    with pytest.raises(FakeError):
        pool.getconn(timeout=5)
    assert time.monotonic() - started < 1
    pool.close()


def test_a_probe_that_raises_counts_as_suspect_and_says_why(db, conc, caplog):
    def broken_probe(conn):
        raise ValueError("filedescriptor out of range in select()")

    pool = make_pool(db, conc, check=lambda c: c.ping(), check_window=30, probe=broken_probe)
    conn = pool.getconn()
    pool.putconn(conn)
    caplog.set_level(logging.DEBUG, logger="greenpool")
    assert pool.getconn() is conn and db.pings == 1  # used a moment ago, but pinged
    assert (
        "checkout probe failed, treating the connection as suspect: "
        "ValueError: filedescriptor out of range in select()" in caplog.text
    )
    pool.putconn(conn)
    pool.close()


def test_probe_replaces_a_dead_connection_without_a_check_or_a_round_trip(db, conc):
    """Health checks off (Django's default): the probe still runs on every
    checkout, and a connection it finds dead is replaced before anyone sees it."""
    pool = make_pool(db, conc, check=None, probe=lambda c: not c.alive)
    conn = pool.getconn()
    pool.putconn(conn)
    assert pool.getconn() is conn  # alive: reused as it is
    pool.putconn(conn)
    conn.alive = False  # the server ended the session while it sat idle
    fresh = pool.getconn()
    assert fresh is not conn and conn.closed
    assert db.pings == 0
    stats = pool.get_stats()
    assert stats["connections_lost"] == 1 and stats["pool_size"] == 1
    pool.putconn(fresh)
    pool.close()


def test_probe_makes_a_recently_used_but_suspect_connection_get_its_ping(db, conc):
    """Within check_window the ping is skipped, unless the local probe (for
    MySQL: the idle socket is readable) says the server may have dropped it."""
    pool = make_pool(db, conc, check=lambda c: c.ping(), check_window=30, probe=lambda c: not c.alive)
    conn = pool.getconn()
    pool.putconn(conn)
    assert pool.getconn() is conn and db.pings == 0  # used a moment ago, probe fine: no ping
    pool.putconn(conn)
    conn.alive = False  # dropped by the server a moment after use
    fresh = pool.getconn()
    assert fresh is not conn and db.pings == 1
    assert pool.get_stats()["connections_lost"] == 1
    pool.putconn(fresh)
    pool.close()

"""greenpool._fork: the process id and the child hooks, across a real fork."""

import os
import subprocess
import sys
import textwrap

from greenpool import _fork


def test_child_hooks_run_in_order_in_the_child_and_the_pid_follows_it():
    read, write = os.pipe()
    ran: list[str] = []
    _fork.in_child(lambda: ran.append(f"first {_fork.pid()}"))
    _fork.in_child(lambda: ran.append("second"))
    parent = _fork.pid()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, ("|".join(ran) + f"|{_fork.pid() == os.getpid()}").encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        seen = pipe.read().decode()
    os.waitpid(pid, 0)
    assert seen == f"first {pid}|second|True"
    assert ran == [] and _fork.pid() == parent == os.getpid(), "the parent runs no hook"


def test_a_fork_without_pythons_hooks_is_noticed_before_an_inherited_pool_is_used():
    # uWSGI forks its workers in C and, by default, runs none of Python's at-fork hooks:
    # libc's fork() here does the same. The child must build its own pool and leave the
    # parent's connections alone.
    script = textwrap.dedent(
        f"""
        import ctypes, os, sys
        sys.path.insert(0, {os.getcwd()!r})
        from greenpool import registry
        from greenpool.pool import Pool
        from tests.fakedb import FakeDB
        db = FakeDB()
        make = lambda: Pool(db.connect, max_size=2, concurrency="threads")
        parent_pool = registry.get_pool("default", "fp", make)
        held = parent_pool.getconn()
        idle = parent_pool.getconn()
        parent_pool.putconn(idle)
        pid = ctypes.CDLL(None).fork()
        if pid == 0:
            parent_pool.putconn(held)  # dropped: the parent's session
            child_pool = registry.get_pool("default", "fp", make)
            ok = child_pool is not parent_pool and parent_pool.closed
            ok = ok and not held.closed and not idle.closed and child_pool.getconn() not in (held, idle)
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert not parent_pool.closed and parent_pool.getconn() is idle
        print("fork-ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "fork-ok" in result.stdout

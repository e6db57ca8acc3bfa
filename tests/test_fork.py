"""greenpool._fork: the process id and the child hooks, across a real fork."""

import os

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

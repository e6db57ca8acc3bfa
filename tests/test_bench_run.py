"""bench/run.py: the connection monitor's pieces, against the real MariaDB
(the whole benchmark runs from `make bench`, never in the test suite)."""

from __future__ import annotations

import os
import sys

import pytest

from bench import run

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")


def test_client_socket_owners_names_the_process_holding_a_server_connection(mysql_params):
    import pymysql

    if mysql_params["host"] not in ("127.0.0.1", "localhost"):
        pytest.skip("the owners are read for connections to 127.0.0.1")
    conn = pymysql.connect(
        host="127.0.0.1",
        port=int(mysql_params["port"]),
        user=mysql_params["user"],
        password=mysql_params["password"],
        ssl_disabled=True,
    )
    try:
        local_port = conn._sock.getsockname()[1]
        owners = run.client_socket_owners(int(mysql_params["port"]))
        assert owners[local_port].startswith(f"pid {os.getpid()} ")
    finally:
        conn.close()
    assert local_port not in run.client_socket_owners(int(mysql_params["port"]))


def test_sched_stats_counts_a_process_cpu_time_and_ignores_a_gone_one():
    import subprocess

    # The child burns 0.3 s of its own CPU time (not of the wall clock, which a
    # busy machine stretches), says so, then sleeps.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nwhile time.process_time() < 0.3:\n    pass\nprint('burnt', flush=True)\ntime.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "burnt\n"
        cpu_ns, _wait_ns, scheduled_in = run.sched_stats([child.pid])
        assert 0.3e9 <= cpu_ns < 2e9 and scheduled_in >= 1
    finally:
        child.kill()
        child.wait(timeout=10)
    assert run.sched_stats([child.pid]) == (0, 0, 0)


def test_study_only_refuses_options_that_would_make_it_something_else():
    for extra in (["--no-extras"], ["--docs", "docs/benchmarks.md"]):
        with pytest.raises(SystemExit, match="--study-only runs the latency study only"):
            run.main(["--study-only", *extra])


def test_a_plan_without_paths_has_no_cells():
    from bench import stacks

    plan = {**run.FULL, "paths": ()}
    assert run.cells(list(stacks.STACKS), plan) == []

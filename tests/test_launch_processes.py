"""greenpool/launch/processes.py: is a PID still the process that wrote master.json?
(Its use by the control directory: tests/test_launch_control_dir.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

from greenpool.launch import processes


def test_a_process_is_running_with_its_own_start_time_only():
    me, started = os.getpid(), processes.start_ticks(os.getpid())
    assert isinstance(started, int)
    assert processes.running(me) and processes.running(me, started)
    assert not processes.running(me, started + 1), "same PID, another start: a reused PID"


def test_a_process_that_exited_and_a_pid_that_is_not_one_are_not_running():
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True, timeout=30
    )
    assert not processes.running(int(child.stdout))  # reaped already (PIDs are not reused this fast)
    for not_a_pid in (None, True, "1", 0, -1):
        assert not processes.running(not_a_pid)

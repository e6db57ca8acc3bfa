"""greenpool/launch/processes.py, and the master's use of it: a master.json left by a
killed master does not block a new start when its PID now belongs to another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from greenpool.launch import config as config_module
from greenpool.launch import master as master_module
from greenpool.launch import processes
from greenpool.launch.errors import ExitCode, LaunchError


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


def _master_with_state(tmp_path, state: dict) -> master_module.Master:
    control = tmp_path / "ctl"
    control.mkdir(mode=0o700)
    (control / "master.json").write_text(json.dumps(state))
    return master_module.Master(config_module.resolve({"control_dir": str(control)}, environ={}))


def test_master_json_of_a_live_master_blocks_a_second_one(tmp_path):
    # PID 1 stands for the other master: alive, and started when the file says.
    m = _master_with_state(tmp_path, {"pid": 1, "started": processes.start_ticks(1)})
    with pytest.raises(LaunchError) as info:
        m.prepare_control_dir()
    assert info.value.code == ExitCode.BIND_ERROR
    assert "another greenpool-serve (master 1) uses the control directory" in info.value.message


def test_master_json_whose_pid_was_reused_does_not_block_a_start(tmp_path):
    # The old master was killed; PID 1 is some other process now (it started at another time).
    m = _master_with_state(tmp_path, {"pid": 1, "started": processes.start_ticks(1) + 1})
    m.prepare_control_dir()
    assert not (tmp_path / "ctl" / "master.json").exists(), "the stale file was cleared"


def test_master_json_that_is_not_an_object_is_treated_as_stale(tmp_path):
    control = tmp_path / "ctl"
    control.mkdir(mode=0o700)
    (control / "master.json").write_text("[1, 2]")
    m = master_module.Master(config_module.resolve({"control_dir": str(control)}, environ={}))
    m.prepare_control_dir()
    assert not (control / "master.json").exists()

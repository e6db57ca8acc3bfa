"""greenpool/launch/control_dir.py: the master's private directory of stats sockets and
master.json, on a real filesystem."""

from __future__ import annotations

import json
import os

import pytest

from greenpool.launch import processes
from greenpool.launch.control_dir import STATE_FILE, ControlDir, read_state
from greenpool.launch.errors import ExitCode, LaunchError


def _with_state(tmp_path, state) -> ControlDir:
    control = tmp_path / "ctl"
    control.mkdir(mode=0o700)
    (control / STATE_FILE).write_text(json.dumps(state))
    (control / "w0-g1.sock").write_text("")  # a socket file a dead master left
    return ControlDir(str(control))


def test_master_json_of_a_live_master_blocks_a_second_one(tmp_path):
    # PID 1 stands for the other master: alive, and started when the file says.
    control = _with_state(tmp_path, {"pid": 1, "started": processes.start_ticks(1)})
    with pytest.raises(LaunchError) as info:
        control.prepare()
    assert info.value.code == ExitCode.BIND_ERROR
    assert "another greenpool-serve (master 1) uses the control directory" in info.value.message
    assert (tmp_path / "ctl" / STATE_FILE).exists(), "the live master's files are left alone"


def test_master_json_whose_pid_was_reused_does_not_block_a_start(tmp_path):
    # The old master was killed; PID 1 is some other process now (it started at another time).
    control = _with_state(tmp_path, {"pid": 1, "started": processes.start_ticks(1) + 1})
    control.prepare()
    assert os.listdir(tmp_path / "ctl") == [], "the stale state and sockets were cleared"


def test_master_json_that_is_not_an_object_is_treated_as_stale(tmp_path):
    control = _with_state(tmp_path, [1, 2])
    assert read_state(control.path) is None
    control.prepare()
    assert not (tmp_path / "ctl" / STATE_FILE).exists()


def test_a_directory_others_can_write_to_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(LaunchError) as info:
        ControlDir(str(shared)).prepare()
    assert info.value.code == ExitCode.BIND_ERROR and "is not private" in info.value.message


def test_a_path_too_long_for_its_sockets_is_refused_naming_the_limit(tmp_path):
    with pytest.raises(LaunchError) as info:
        ControlDir(str(tmp_path / ("d" * 120))).prepare()
    assert info.value.code == ExitCode.USAGE and "too long for a unix socket path" in info.value.message


def test_state_is_written_whole_and_removed_with_the_directory(tmp_path):
    control = ControlDir(str(tmp_path / "ctl"))
    control.prepare()
    assert oct((tmp_path / "ctl").stat().st_mode & 0o777) == "0o700"
    control.write_state({"pid": 123, "workers": []})
    assert read_state(control.path) == {"pid": 123, "workers": []}
    assert control.worker_socket(2, 7) == str(tmp_path / "ctl" / "w2-g7.sock")
    control.remove()
    assert not (tmp_path / "ctl").exists()


def test_a_directory_with_files_of_others_stays(tmp_path):
    control = ControlDir(str(tmp_path / "ctl"))
    control.prepare()
    (tmp_path / "ctl" / "notes.txt").write_text("the user's")
    control.remove()
    assert (tmp_path / "ctl" / "notes.txt").exists()

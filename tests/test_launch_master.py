"""greenpool/launch/master.py's parts that a test can drive without starting processes
(the process-level behaviour is in tests/test_launch_serve.py)."""

from __future__ import annotations

import signal

import pytest

from greenpool.launch import config as config_module
from greenpool.launch import master as master_module


@pytest.fixture
def master(tmp_path, monkeypatch):
    m = master_module.Master(config_module.resolve({"control_dir": str(tmp_path / "ctl")}, environ={}))
    calls: list[tuple] = []
    monkeypatch.setattr(m, "begin_stop", lambda graceful: calls.append(("stop", graceful)))
    monkeypatch.setattr(m, "add_worker", lambda: calls.append(("add",)))
    monkeypatch.setattr(m, "remove_worker", lambda: calls.append(("remove",)))
    m.calls = calls
    return m


def test_every_signal_the_master_installs_has_a_handler():
    for name in master_module._SIGNALS:
        assert callable(getattr(master_module.Master, f"handle_{name[3:].lower()}", None)), name


@pytest.mark.parametrize(
    "signum, expected",
    [
        (signal.SIGTERM, [("stop", True)]),
        (signal.SIGINT, [("stop", False)]),
        (signal.SIGQUIT, [("stop", False)]),
        (signal.SIGTTIN, [("add",)]),
        (signal.SIGTTOU, [("remove",)]),
        (signal.SIGCHLD, []),
    ],
)
def test_a_recorded_signal_is_acted_on_by_the_loop(master, signum, expected):
    master.signals.append(signum)
    master.handle_signals()
    assert master.calls == expected and not master.signals


def test_hup_queues_every_worker_for_a_rolling_restart(master):
    master.signals.append(signal.SIGHUP)
    master.handle_signals()
    assert list(master.reload_queue) == list(range(master.desired))


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU])
def test_while_stopping_only_stop_signals_are_acted_on(master, signum):
    master.stopping = True
    master.signals.extend([signum, signal.SIGINT])
    master.handle_signals()
    assert master.calls == [("stop", False)] and not master.reload_queue

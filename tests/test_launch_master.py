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


# -- what the workers serve ------------------------------------------------------------


def test_app_given_is_served_as_is():
    choice = master_module.choose_app("mysite.wsgi:application", {"DJANGO_SETTINGS_MODULE": "mysite.settings"})
    assert (choice.description, choice.demo) == ("APP mysite.wsgi:application", False)
    assert choice.env["DJANGO_SETTINGS_MODULE"] == "mysite.settings"


def test_django_settings_module_alone_serves_its_wsgi_application():
    choice = master_module.choose_app(None, {"DJANGO_SETTINGS_MODULE": "mysite.settings"})
    assert "DJANGO_SETTINGS_MODULE=mysite.settings" in choice.description and not choice.demo


def test_nothing_given_serves_the_demo_site_without_touching_the_callers_environment():
    environ = {"PATH": "/usr/bin"}
    choice = master_module.choose_app(None, environ)
    assert choice.demo and choice.env["DJANGO_SETTINGS_MODULE"] == master_module.DEMO_SETTINGS
    assert "DJANGO_SETTINGS_MODULE" not in environ


# -- respawning a failed worker ---------------------------------------------------------


def test_failures_in_a_row_wait_longer_each_time_up_to_the_cap():
    backoff = master_module.RespawnBackoff()
    delays = [backoff.failed(0, now=100.0) for _ in range(12)]
    assert delays[:4] == [0.0, 0.5, 1.0, 2.0]
    assert delays[-1] == backoff.MAX_DELAY and sorted(delays) == delays
    assert backoff.failed(1, now=100.0) == 0.0, "each worker slot counts its own failures"


def test_a_slot_is_due_once_its_delay_has_passed():
    backoff = master_module.RespawnBackoff()
    backoff.failed(0, now=100.0)
    backoff.failed(0, now=100.0)  # second in a row: 0.5 s
    assert backoff.scheduled(0) and not backoff.scheduled(1)
    assert not backoff.due(0, now=100.4) and backoff.due(0, now=100.5)
    backoff.forget(0)
    assert not backoff.scheduled(0) and backoff.due(0, now=0.0), "a forgotten slot waits for nothing"


def test_a_worker_that_served_long_enough_starts_the_count_anew():
    backoff = master_module.RespawnBackoff()
    for _ in range(3):
        backoff.failed(0, now=0.0)
    backoff.served(0, seconds=backoff.HEALTHY_SECONDS / 2)
    assert backoff.failed(0, now=0.0) == 2.0, "a short life does not reset the count"
    backoff.served(0, seconds=backoff.HEALTHY_SECONDS + 1)
    assert backoff.failed(0, now=0.0) == 0.0

"""greenpool.launch.config: one list of settings makes the parser, the
environment fallbacks, the config file reader and the docs page."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from greenpool.launch import config
from greenpool.launch.errors import ExitCode, LaunchError

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "settings-launcher.md"


def resolve(argv, env=None):
    cfg, _ = config.parse_args(argv, environ=env or {})
    return cfg


def test_every_setting_has_a_flag_or_is_the_positional_app_and_a_help_text():
    names = [s.name for s in config.SETTINGS]
    assert len(names) == len(set(names))
    for setting in config.SETTINGS:
        assert setting.help.strip(), setting.name
        assert setting.flags or setting.name == "app"
        assert setting.section in config.SECTIONS
        if setting.default is not None:
            # The default passes its own validator.
            assert setting.validate(setting.default) == setting.default


def test_every_setting_is_a_parser_option():
    for command in ("serve", "stats", "nginx-config"):
        parser = config.build_parser(command)
        dests = {action.dest for action in parser._actions}
        assert {s.name for s in config.SETTINGS if command in s.commands} <= dests, command


def test_defaults_without_flags_environment_or_file():
    cfg = resolve([])
    assert cfg.server == "gevent"
    assert cfg.workers == 1
    assert cfg.bind == ["127.0.0.1:8000"]
    assert cfg.keep_alive > 60  # longer than nginx's default upstream keepalive_timeout
    assert all(source == "default" for source in cfg.sources.values())


def test_command_line_beats_environment_beats_config_file(tmp_path):
    conf = tmp_path / "gp.conf.py"
    conf.write_text("import os\nworkers = 3\nthreads = 4\nbind = ['127.0.0.1:9000', 'unix:/tmp/gp.sock']\n")
    env = {"GREENPOOL_WORKERS": "5", "GREENPOOL_CONFIG": str(conf), "GREENPOOL_TIMEOUT": "7"}
    cfg = resolve(["--workers", "6"], env)
    assert cfg.workers == 6 and cfg.sources["workers"] == "command line"
    assert cfg.timeout == 7.0 and cfg.sources["timeout"] == "environment GREENPOOL_TIMEOUT"
    assert cfg.threads == 4 and cfg.sources["threads"].startswith("config file")
    assert cfg.bind == ["127.0.0.1:9000", "unix:/tmp/gp.sock"]
    cfg = resolve([], env)
    assert cfg.workers == 5


def test_boolean_flags_have_a_no_form_to_override_the_environment():
    cfg = resolve(["--no-worker-ports"], {"GREENPOOL_WORKER_PORTS": "yes"})
    assert cfg.worker_ports is False
    assert resolve([], {"GREENPOOL_WORKER_PORTS": "on"}).worker_ports is True


def test_environment_lists_are_comma_separated():
    cfg = resolve([], {"GREENPOOL_BIND": "127.0.0.1:8001, [::1]:8002", "GREENPOOL_FORWARDED_ALLOW_IPS": "10.0.0.0/8,*"})
    assert cfg.bind == ["127.0.0.1:8001", "[::1]:8002"]
    assert cfg.forwarded_allow_ips == ["10.0.0.0/8", "*"]


def test_app_without_callable_means_application():
    assert resolve(["mysite.wsgi"]).app == "mysite.wsgi:application"
    assert resolve(["mysite.wsgi:app"]).app == "mysite.wsgi:app"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"GREENPOOL_WORKERS": "abc"}, "GREENPOOL_WORKERS='abc': expected an integer >= 1"),
        ({"GREENPOOL_WORKERS": "0"}, "GREENPOOL_WORKERS='0': expected an integer >= 1, got 0"),
        ({"GREENPOOL_SERVER": "uwsgi"}, "expected one of gevent, tornado"),
        ({"GREENPOOL_BIND": "localhost"}, "expected HOST:PORT"),
        ({"GREENPOOL_BIND": "127.0.0.1:99999"}, "port must be 0-65535"),
        ({"GREENPOOL_KEEP_ALIVE": "0"}, "seconds > 0"),
        # inf would lift the bound of a wait (the boot limit, a graceful stop).
        (
            {"GREENPOOL_DB_BOOT_TIMEOUT": "inf"},
            "GREENPOOL_DB_BOOT_TIMEOUT='inf': expected a finite number of seconds > 0",
        ),
        ({"GREENPOOL_GRACEFUL_TIMEOUT": "inf"}, "expected a finite number of seconds"),
        ({"GREENPOOL_KEEP_ALIVE": "nan"}, "expected a finite number of seconds"),
        ({"GREENPOOL_TIMEOUT": "inf"}, "--timeout must be 0 (off) or at least 1 second"),
        ({"GREENPOOL_BACKLOG": "99999999999"}, "expected an integer from 1 to 65535, got 99999999999"),
        ({"GREENPOOL_FORWARDED_ALLOW_IPS": "nginx"}, "'nginx' is not an IP address"),
        ({"GREENPOOL_REQUIRE_DB": "maybe"}, "expected true or false"),
    ],
)
def test_bad_environment_values_name_the_variable(env, message):
    with pytest.raises(LaunchError) as info:
        resolve([], env)
    assert info.value.code == ExitCode.USAGE
    assert message in info.value.message


def test_config_file_unknown_setting_is_an_error(tmp_path):
    conf = tmp_path / "gp.py"
    conf.write_text("workerz = 4\n")
    with pytest.raises(LaunchError) as info:
        resolve(["-c", str(conf)])
    assert info.value.code == ExitCode.USAGE
    assert "unknown setting 'workerz'" in info.value.message and "workers" in info.value.message


def test_config_file_bad_value_names_file_and_setting(tmp_path):
    conf = tmp_path / "gp.py"
    conf.write_text("graceful_timeout = -1\n")
    with pytest.raises(LaunchError) as info:
        resolve(["--config", str(conf)])
    assert "graceful_timeout = -1" in info.value.message and str(conf) in info.value.message


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--reuse-port", "--worker-ports", "-b", "127.0.0.1:8000"], "exclude each other"),
        (["--reuse-port", "-b", "unix:/tmp/x.sock"], "needs TCP"),
        (["--worker-ports", "-b", "127.0.0.1:0"], "fixed port"),
        (["--reuse-port", "-b", "127.0.0.1:0"], "--reuse-port needs a fixed port"),
        (["-b", "127.0.0.1:8000", "-b", "127.0.0.1:8000"], "twice"),
    ],
)
def test_contradicting_settings_are_refused(argv, message):
    with pytest.raises(LaunchError) as info:
        resolve(argv)
    assert message in info.value.message


def test_threads_take_a_count_or_auto():
    assert resolve([]).threads == 10
    assert resolve(["--threads", "4"]).threads == 4
    assert resolve(["--threads", "auto"]).threads == "auto"


@pytest.mark.parametrize("value", ["0", "many", "2.5"])
def test_bad_threads_are_refused_naming_the_flag(value, capsys):
    with pytest.raises(SystemExit) as info:
        config.parse_args(["--threads", value], environ={})
    assert info.value.code == 2
    assert "--threads" in capsys.readouterr().err


@pytest.mark.parametrize("server", ["gevent", "tornado"])
def test_a_server_whose_package_is_missing_is_refused_naming_the_extra(server, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == server else real(name, *a))
    with pytest.raises(LaunchError) as info:
        resolve(["--server", server])
    assert info.value.code == ExitCode.USAGE
    assert f"pip install 'greenpool[{server}]'" in info.value.message


@pytest.mark.parametrize("value", ["0.1", "0.5", "0.99", "-1"])
def test_timeout_below_one_second_is_refused_naming_the_flag(value):
    # The heartbeat comes every 0.2 s at best: a shorter --timeout kills healthy workers.
    with pytest.raises(LaunchError) as info:
        resolve([], {"GREENPOOL_TIMEOUT": value})
    assert info.value.code == ExitCode.USAGE
    assert "--timeout must be 0 (off) or at least 1 second" in info.value.message
    proc = _cli("--timeout", value)
    assert proc.returncode == ExitCode.USAGE
    assert "--timeout must be 0 (off) or at least 1 second" in proc.stderr


@pytest.mark.parametrize("value, expected", [("0", 0.0), ("1", 1.0), ("1.5", 1.5), ("30", 30.0)])
def test_timeout_of_zero_or_at_least_one_second_is_accepted(value, expected):
    assert resolve(["--timeout", value]).timeout == expected


def _cli(*args, env=None):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "greenpool.launch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


def test_bad_flag_exits_with_usage_code_and_names_the_flag():
    proc = _cli("--workers", "0")
    assert proc.returncode == ExitCode.USAGE == 2
    assert "argument -w/--workers: expected an integer >= 1, got 0" in proc.stderr
    proc = _cli("--no-such-flag")
    assert proc.returncode == ExitCode.USAGE
    assert "unrecognized arguments: --no-such-flag" in proc.stderr


def test_a_request_line_limit_the_gevent_parser_cannot_honour_is_refused_naming_the_flag():
    # gevent.pywsgi answers 414 itself from 8192 bytes, whatever the limit says.
    proc = _cli("--limit-request-line", "8191")
    assert proc.returncode == ExitCode.USAGE
    assert "argument --limit-request-line: expected an integer from 64 to 8190, got 8191" in proc.stderr


def test_bad_environment_value_exits_with_usage_code():
    proc = _cli(env={"GREENPOOL_WORKERS": "many"})
    assert proc.returncode == ExitCode.USAGE
    assert "greenpool-serve: error: GREENPOOL_WORKERS='many'" in proc.stderr


def test_print_config_shows_values_and_sources():
    proc = _cli("--print-config", "-w", "3", env={"GREENPOOL_SERVER": "tornado"})
    assert proc.returncode == 0, proc.stderr
    lines = {line.split("=")[0].strip(): line for line in proc.stdout.splitlines()}
    assert "3" in lines["workers"] and "command line" in lines["workers"]
    assert "'tornado'" in lines["server"] and "environment GREENPOOL_SERVER" in lines["server"]
    assert "# default" in lines["backlog"]


def test_settings_docs_page_is_generated_from_the_settings_list():
    generated = config.markdown()
    for setting in config.SETTINGS:
        assert f"### `{setting.name}`" in generated
        if setting.env_var:
            assert setting.env_var in generated
    for code in ExitCode:
        assert f"`{code.name}`" in generated
    assert DOCS.read_text() == generated, (
        "docs/settings-launcher.md is out of date: python -m greenpool.launch.config --markdown > docs/settings-launcher.md"
    )


def test_markdown_command_prints_the_page():
    proc = subprocess.run(
        [sys.executable, "-m", "greenpool.launch.config", "--markdown"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert proc.stdout == config.markdown()

"""servers/: the systemd unit and the supervisord program parse with the real
tools, and hold the values the launcher's signals need: reload = HUP to the
master, stop = TERM with a timeout longer than --graceful-timeout."""

from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "servers" / "greenpool.service"
SUPERVISOR = ROOT / "servers" / "greenpool-supervisord.conf"
SERVE = Path(sys.executable).with_name("greenpool-serve")


def unit_settings(text: str) -> dict[str, str]:
    """key -> value of the unit file (the last one wins, as in systemd)."""
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def graceful_timeout(command: str) -> float:
    args = shlex.split(command)
    return float(args[args.index("--graceful-timeout") + 1]) if "--graceful-timeout" in args else 30.0


# -- systemd -------------------------------------------------------------------------------


def test_systemd_unit_reloads_with_hup_and_stops_with_term_in_time():
    unit = unit_settings(UNIT.read_text())
    assert unit["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["KillSignal"] == "SIGTERM"
    assert unit["KillMode"] == "mixed"  # TERM to the master only; it stops its workers in order
    assert float(unit["TimeoutStopSec"]) > graceful_timeout(unit["ExecStart"]) + 5  # the master's own margin
    assert unit["RestartPreventExitStatus"].split() == ["2", "3", "4", "5"]
    assert "--worker-ports" in unit["ExecStart"]
    # The stats sockets in a directory systemd makes private, outside PrivateTmp.
    assert (unit["RuntimeDirectory"], unit["RuntimeDirectoryMode"]) == ("greenpool", "0700")
    assert "--control-dir /run/greenpool" in unit["ExecStart"]


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    """systemd-analyze verify where it exists; it checks that ExecStart is executable,
    so the copy verified here points at this checkout's greenpool-serve."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; test_systemd_unit_... checked the values")
    copy = tmp_path / "greenpool.service"
    copy.write_text(UNIT.read_text().replace("/srv/mysite/venv/bin/greenpool-serve", str(SERVE)))
    proc = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    output = (proc.stdout + proc.stderr).strip()
    print(f"systemd-analyze verify: exit {proc.returncode}, output {output!r}")
    assert proc.returncode == 0, output
    # Warnings about this unit (unknown keys, bad values) do not fail verify: fail here.
    assert "greenpool.service" not in output, output


# -- supervisord ---------------------------------------------------------------------------


def supervisor_options(tmp_path: Path, program_conf: str):
    """supervisord's own parser on a main file that includes ``program_conf``."""
    options_module = pytest.importorskip("supervisor.options", reason="pip install supervisor (the test extra has it)")
    main = tmp_path / "supervisord.conf"
    main.write_text(
        f"[supervisord]\nlogfile={tmp_path}/supervisord.log\npidfile={tmp_path}/supervisord.pid\n"
        f"[unix_http_server]\nfile={tmp_path}/supervisor.sock\n"
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{tmp_path}/supervisor.sock\n"
        f"[include]\nfiles={tmp_path}/program.conf\n"
    )
    (tmp_path / "program.conf").write_text(program_conf)
    options = options_module.ServerOptions()
    try:
        options.realize(args=["-c", str(main)])
    except SystemExit as exc:  # supervisord's parser prints the error and exits
        raise AssertionError(f"supervisord refused the program config (exit {exc.code})") from None
    return options, main


def localized(tmp_path: Path, text: str) -> str:
    """The program config with this machine's user, paths and log directory."""
    (tmp_path / "log").mkdir(exist_ok=True)
    return (
        text.replace("user=greenpool", f"user={getpass.getuser()}")
        .replace("/srv/mysite/venv/bin/greenpool-serve", str(SERVE))
        .replace("directory=/srv/mysite", f"directory={tmp_path}")
        .replace("/var/log/greenpool", str(tmp_path / "log"))
    )


def test_supervisord_parses_the_program_with_term_and_a_long_enough_stop_wait(tmp_path):
    options, _ = supervisor_options(tmp_path, localized(tmp_path, SUPERVISOR.read_text()))
    (group,) = options.process_group_configs
    (program,) = group.process_configs
    assert program.name == "greenpool"
    assert program.stopsignal == signal.SIGTERM
    assert program.stopwaitsecs > graceful_timeout(program.command) + 5
    assert program.killasgroup and not program.stopasgroup
    assert sorted(program.exitcodes) == [0, 2, 3, 4, 5]
    assert "--worker-ports" in program.command


@pytest.mark.mysql
def test_supervisord_runs_greenpool_serve_reloads_it_with_hup_and_stops_it(tmp_path, mysql_params):
    """The real thing: supervisord starts the program (the demo site instead of
    mysite), `supervisorctl signal HUP` replaces every worker, `supervisorctl stop`
    ends it with exit 0 within stopwaitsecs."""
    pytest.importorskip("supervisor")
    from tests.support.net import free_port

    port = free_port()
    text = localized(tmp_path, SUPERVISOR.read_text())
    text = text.replace("--bind 127.0.0.1:8001", f"--bind 127.0.0.1:{port} --control-dir {tmp_path}/ctl")
    text = text.replace("--workers 4 --worker-ports", "--workers 2")
    text = text.replace(" mysite.wsgi:application", "")
    env = ",".join(f'GREENPOOL_MYSQL_{k.upper()}="{v}"' for k, v in mysql_params.items() if k != "database")
    text = re.sub(
        r"^environment=.*$",
        f'environment={env},GREENPOOL_MYSQL_DATABASE="{mysql_params["database"]}"',
        text,
        flags=re.M,
    )
    _, main = supervisor_options(tmp_path, text)
    bindir = Path(sys.executable).parent
    supervisord = subprocess.Popen(
        [str(bindir / "supervisord"), "-n", "-c", str(main)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    log = tmp_path / "log" / "greenpool.log"

    def ctl(*args: str) -> str:
        proc = subprocess.run(
            [str(bindir / "supervisorctl"), "-c", str(main), *args], capture_output=True, text=True, timeout=60
        )
        return proc.stdout + proc.stderr

    def wait_log(pattern: str, count: int = 1, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists() and len(re.findall(pattern, log.read_text(errors="replace"))) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} in the program log:\n{log.read_text() if log.exists() else ''}")

    try:
        wait_log("all 2 workers ready")
        deadline = time.monotonic() + 30  # RUNNING once up for startsecs
        while "RUNNING" not in ctl("status", "greenpool"):
            assert time.monotonic() < deadline, ctl("status", "greenpool")
            time.sleep(0.5)
        assert "greenpool: signalled" in ctl("signal", "HUP", "greenpool")
        wait_log(r"worker \d replaced", count=2)
        started = time.monotonic()
        assert "greenpool: stopped" in ctl("stop", "greenpool")
        assert time.monotonic() - started < 40
        text = log.read_text()
        assert "SIGTERM: graceful stop" in text and "exiting with 0 (OK)" in text
    finally:
        os.kill(supervisord.pid, signal.SIGTERM)
        try:
            supervisord.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(supervisord.pid, signal.SIGKILL)
            supervisord.wait(10)

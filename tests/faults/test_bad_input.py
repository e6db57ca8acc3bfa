"""Bad input fails at startup with a message naming the problem, and nothing
half-starts: the master exits with a named code, no worker is left running, and
the port is free again.

Covered elsewhere (not repeated here): an invalid pool value (max_size=0) at boot,
bad APP, APP without its callable (tests/test_launch_serve.py); bad
flags, bad environment values, an unknown or bad setting in a config file
(tests/test_launch_config.py); unknown and invalid pool options and CONN_MAX_AGE
with a pool as ImproperlyConfigured (tests/test_backend.py, tests/test_pool.py).
Here: the ones that were missing, and the "nothing half-starts" checks for all.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from greenpool.launch.errors import ExitCode
from tests.faults.conftest import demo_env
from tests.support.fakedns import NOERROR, NXDOMAIN, SERVFAIL, FakeDNSServer, NXDomainServer, private_resolv_conf
from tests.support.serve import ServeProcess, cli

pytestmark = pytest.mark.faults


def assert_nothing_left(server: ServeProcess) -> None:
    """No process of the session the test started is alive, and the port binds."""
    deadline = time.monotonic() + 5
    while server.group_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.group_alive(), f"processes of greenpool-serve left running:\n{server.log()[-3000:]}"
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.port))  # raises if something still listens there
        sock.listen(1)


def _settings(tmp_path: Path, name: str, body: str) -> dict[str, str]:
    (tmp_path / f"{name}.py").write_text("from greenpool.demo.settings import *\n" + body)
    return {"DJANGO_SETTINGS_MODULE": name}


def _fails(serve, code: ExitCode, *args: str, **kwargs) -> str:
    server = serve(*args, wait=False, **kwargs)
    assert server.wait_exit() == code, server.log()
    assert_nothing_left(server)
    return server.log()


# -- the database refuses us ---------------------------------------------------------------


@pytest.mark.parametrize("site", ["demo", "app"])
def test_wrong_password_fails_at_startup_naming_the_user(serve, db, tmp_path, site):
    user = db.create_user("Right-Password-0001")
    env = {} if site == "demo" else _settings(tmp_path, "wrongpw_settings", "")
    # The pool opening at boot retries for --db-boot-timeout before it reports (min_size=1).
    log = _fails(
        serve,
        ExitCode.CONFIG_ERROR,
        "--log-level",
        "debug",
        "--db-boot-timeout",
        "1",
        server="gevent",
        env=env,
        db_params=db.params(user=user, password="Wrong-Password-0002"),
    )
    denied = f"(1045, \"Access denied for user '{user}'@'127.0.0.1' (using password: YES)\")"
    where = f"{user}@127.0.0.1:{db.server.port}/{db.database}"
    if site == "demo":  # the master's migrate step meets it first
        assert f"the demo database {where} cannot be used: {denied}; check GREENPOOL_MYSQL_USER" in log, log
    else:  # the workers meet it at boot
        assert f"database 'default' ({where}) cannot be used: {denied}; check DATABASES['default']" in log, log
        assert "failed to boot (exit 3 (CONFIG_ERROR)); stopping" in log
    assert "Wrong-Password-0002" not in log and "Right-Password-0001" not in log
    assert "Traceback" not in log


@pytest.mark.parametrize("site", ["demo", "app"])
def test_unknown_host_fails_at_startup_naming_the_host(serve, db, tmp_path, site):
    wrapper = private_resolv_conf(tmp_path)
    if wrapper is None:
        pytest.skip("needs root and unshare(1) to give the server a resolver on 127.0.0.1")
    try:
        dns = NXDomainServer()
    except OSError as exc:
        pytest.skip(f"cannot answer DNS on 127.0.0.1:53 here: {exc}")
    env = {} if site == "demo" else _settings(tmp_path, "unknownhost_settings", "")
    with dns:
        # The pool retries a failed connect for its timeout (2003 counts as "server away"), so keep it short.
        log = _fails(
            serve,
            ExitCode.CONFIG_ERROR,
            "--db-boot-timeout",
            "2",
            server="tornado",
            env={**env, **demo_env(pool_timeout=2)},
            wrapper=wrapper,
            db_params=db.params(host="no-such-host.invalid"),
        )
    assert dns.queries, "the resolver was not asked: the test did not test a lookup"
    cannot = (
        "(2003, \"Can't connect to MySQL server on 'no-such-host.invalid' ([Errno -2] Name or service not known)\")"
    )
    if site == "demo":
        assert (
            f"the demo database root@no-such-host.invalid:{db.server.port}/{db.database} cannot be used: {cannot}"
            in log
        ), log
    else:
        assert f"@no-such-host.invalid:{db.server.port}/{db.database}) cannot be used: {cannot}" in log, log


def test_a_resolver_that_cannot_answer_is_an_outage_not_a_bad_host(serve, db, tmp_path):
    # The twin of the test above: a resolver that is down (SERVFAIL, the C
    # library's EAI_AGAIN) may come back, so the worker starts anyway and answers
    # 503, retries connects on the request path, and serves once it answers,
    # where a name that does not exist is a CONFIG_ERROR at startup.
    wrapper = private_resolv_conf(tmp_path)
    if wrapper is None:
        pytest.skip("needs root and unshare(1) to give the server a resolver on 127.0.0.1")
    host = "db.greenpool.test"
    resolver_up = threading.Event()

    def answer(name: str) -> int | str:
        # Any name under it: the C library may add a search domain after a failure.
        if not name.startswith(host):
            return NXDOMAIN
        return "127.0.0.1" if resolver_up.is_set() else SERVFAIL

    try:
        dns = FakeDNSServer(answer)
    except OSError as exc:
        pytest.skip(f"cannot answer DNS on 127.0.0.1:53 here: {exc}")
    # Its own settings module, so that the worker's boot meets the outage (the
    # demo site would meet it first in the master's migrate step).
    env = {**_settings(tmp_path, "resolverdown_settings", ""), **demo_env(pool_timeout=1)}
    with dns:
        server = serve(
            "--db-boot-timeout",
            "2",
            server="gevent",
            workers=1,
            env=env,
            wrapper=wrapper,
            db_params=db.params(host=host),
        )
        pid = server.worker_pids()
        status, _, body = server.get("/healthz")
        assert status == 503, (body, server.log()[-3000:])
        resolver_up.set()
        deadline = time.monotonic() + 20
        while status != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            status, _, body = server.get("/healthz")
        assert status == 200, (body, server.log()[-3000:])
    assert server.worker_pids() == pid
    answered = [rcode for name, rcode in dns.replies if name == host]
    assert SERVFAIL in answered and answered[-1] == NOERROR, dns.replies
    log = server.log()
    assert re.search(r"unavailable at boot: .*Temporary failure in name resolution.*; serving anyway", log), log[-3000:]
    assert re.search(r"gevent\.0\].*connect failed, retrying .*Temporary failure in name resolution", log), log[-3000:]
    assert "cannot be used" not in log, log[-3000:]


def test_unknown_database_fails_at_startup_naming_it(serve, db):
    log = _fails(serve, ExitCode.CONFIG_ERROR, server="gevent", db_params=db.params(database="no_such_db"))
    assert (
        f"the demo database root@127.0.0.1:{db.server.port}/no_such_db cannot be used: "
        "(1049, \"Unknown database 'no_such_db'\")"
    ) in log, log


# -- bad Django settings at boot -------------------------------------------------------------


def test_unknown_pool_option_fails_at_startup_naming_it(serve, tmp_path):
    env = _settings(tmp_path, "unknownoption_settings", "DATABASES['default']['OPTIONS']['pool']['max_szie'] = 5\n")
    log = _fails(serve, ExitCode.CONFIG_ERROR, server="gevent", env=env)
    assert (
        "DATABASES['default'] is invalid: DATABASES['default']['OPTIONS']['pool'] has unknown option(s) max_szie; "
        "valid options are: min_size, max_size, timeout"
    ) in log, log


def test_conn_max_age_with_a_pool_fails_at_startup(serve, tmp_path):
    env = _settings(tmp_path, "maxage_settings", "DATABASES['default']['CONN_MAX_AGE'] = 60\n")
    log = _fails(serve, ExitCode.CONFIG_ERROR, server="tornado", env=env)
    assert "DATABASES['default'] is invalid: Pooling doesn't support persistent connections." in log, log


def test_bad_demo_environment_value_fails_at_startup(serve):
    log = _fails(serve, ExitCode.CONFIG_ERROR, server="gevent", env=demo_env(pool_timeout="soon"))
    assert "GREENPOOL_DEMO_POOL_TIMEOUT='soon' is not a float" in log, log


def test_reply_wait_out_of_range_fails_at_startup_naming_it(serve):
    log = _fails(serve, ExitCode.CONFIG_ERROR, server="gevent", env=demo_env(pool_reply_wait="0.5"))
    assert (
        "DATABASES['default']['OPTIONS']['pool']['reply_wait']=0.5 is invalid: "
        "expected seconds from 0 to 0.01 (0.0003 is 300 µs), or False"
    ) in log, log


# -- already covered for their message; here: nothing is left behind ------------------------------


def test_bad_app_leaves_nothing_running(serve):
    log = _fails(serve, ExitCode.APP_LOAD_ERROR, "no_such_module.wsgi:application", workers=2)
    assert "cannot import APP 'no_such_module.wsgi:application'" in log


def test_port_in_use_leaves_nothing_running(serve):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        server = serve(wait=False, port=port)
        assert server.wait_exit() == ExitCode.BIND_ERROR
        assert f"cannot bind 127.0.0.1:{port}: address already in use" in server.log()
        deadline = time.monotonic() + 5
        while server.group_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not server.group_alive()
        assert not re.search(r"worker \d", server.log()), server.log()  # no worker was started


def test_bad_pool_value_in_one_worker_stops_every_worker(serve, tmp_path):
    env = _settings(tmp_path, "badvalue_settings", "DATABASES['default']['OPTIONS']['pool']['timeout'] = -1\n")
    log = _fails(serve, ExitCode.CONFIG_ERROR, server="tornado", workers=3, env=env)
    assert "invalid pool option timeout=-1: expected seconds > 0" in log, log


# -- config files ----------------------------------------------------------------------------------


def test_missing_config_file_is_a_usage_error(tmp_path):
    missing = tmp_path / "nope.conf.py"
    proc = cli("--config", str(missing), env=dict(os.environ))
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert f"greenpool-serve: error: config file '{missing}' does not exist" in proc.stderr


def test_unreadable_config_file_is_a_usage_error():
    # As root every file is readable: read it as nobody instead.
    setpriv = shutil.which("setpriv")
    if os.geteuid() == 0 and not setpriv:
        pytest.skip("running as root without setpriv(1): cannot make a file unreadable")
    folder = tempfile.mkdtemp(prefix="gp-conf-")
    try:
        os.chmod(folder, 0o755)
        conf = Path(folder) / "gp.conf.py"
        conf.write_text("workers = 2\n")
        os.chmod(conf, 0o000)
        prefix = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "greenpool.launch", "--config", str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            cwd=folder,
            env={**os.environ, "HOME": folder},
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert (
        f"greenpool-serve: error: config file '{conf}' failed to run: PermissionError: [Errno 13] Permission denied"
        in proc.stderr
    ), proc.stderr

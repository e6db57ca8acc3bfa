"""``make run``: the demo site behind a real nginx, as it is deployed.

Shipped with the demo, so that a user sees the whole deployment run on their machine.

    python -m greenpool.launch.demo_run            # nginx on http://127.0.0.1:8080/

Starts ``greenpool-serve`` (the demo site, 2 gevent workers, one port each from
8001) and an nginx of its own from ``.run/nginx/`` with the configuration that
``greenpool-serve nginx-config --standalone`` renders: nothing outside that
prefix is read or written, and no system nginx is touched. It waits until
both answer, prints the URLs to try, and on Ctrl-C or TERM stops both by
their process ids (TERM to greenpool-serve: a graceful drain; QUIT to nginx:
a graceful shutdown). If either exits on its own, the other is stopped too.

Environment: GREENPOOL_RUN_PORT (nginx's port, 8080), GREENPOOL_RUN_APP_PORT
(the first worker's port, 8001), GREENPOOL_RUN_WORKERS (2),
GREENPOOL_RUN_SERVER (gevent or tornado), GREENPOOL_RUN_PREFIX (.run/nginx; the
workers' stats sockets go to .run/control beside it),
NGINX (the nginx binary), and the demo's GREENPOOL_MYSQL_* settings.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from greenpool.launch import nginx as nginx_module

READY_TIMEOUT = 120.0  # the demo database is migrated and seeded before the workers start
STOP_TIMEOUT = 40.0  # > greenpool-serve's --graceful-timeout (30 s)


def say(message: str) -> None:
    try:
        print(f"[run] {message}", file=sys.stderr, flush=True)
    except OSError:  # the terminal or pipe is gone (Ctrl-C took `| tee` with it): keep stopping
        pass


def show(text: str) -> None:
    try:
        print(text, flush=True)
    except OSError:
        pass


def _die_with_parent(signum: int):
    """A preexec_fn: the child gets ``signum`` if this script dies without stopping it
    (Linux prctl PR_SET_PDEATHSIG; elsewhere nothing)."""

    def preexec() -> None:
        os.setsid()  # a session of its own: Ctrl-C reaches only this script
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signum, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    return preexec


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"[run] {name}={raw!r} is not a number") from None


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def get(port: int, path: str, timeout: float = 2.0) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


class StopRequested(Exception):
    """Ctrl-C or TERM arrived while waiting for a process to be ready."""


def wait_until(
    what: str, probe: Callable[[], bool], procs: dict[str, subprocess.Popen], timeout: float, stop_requested: list[int]
) -> None:
    """Call probe() every 0.2 s until it is true, for at most ``timeout`` seconds,
    or until a signal handler appends to ``stop_requested``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop_requested:
            raise StopRequested(f"{signal.Signals(stop_requested[0]).name} while waiting for {what}: stopping")
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{what}: {name} exited first (exit {proc.returncode})")
        try:
            ready = probe()
        except OSError:  # not listening yet
            ready = False
        if ready:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what}: not ready after {timeout:.0f}s")


def stop(proc: subprocess.Popen | None, signum: int, name: str, timeout: float = STOP_TIMEOUT) -> None:
    """Signal the process we started (by its pid), wait, then KILL its process group."""
    if proc is None or proc.poll() is not None:
        return
    say(f"stopping {name} (pid {proc.pid}) with {signal.Signals(signum).name}")
    try:
        os.kill(proc.pid, signum)
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        say(f"{name} still running after {timeout:.0f}s: killing its process group")
    except ProcessLookupError:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the session it leads: started by us below
    except (ProcessLookupError, PermissionError):
        return  # the group is gone already
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:  # uninterruptible sleep: say so, and go on stopping the rest
        say(f"{name} (pid {proc.pid}) still running 10 s after SIGKILL")


def main() -> int:
    nginx_port = env_int("GREENPOOL_RUN_PORT", 8080)
    app_port = env_int("GREENPOOL_RUN_APP_PORT", 8001)
    workers = env_int("GREENPOOL_RUN_WORKERS", 2)
    server = os.environ.get("GREENPOOL_RUN_SERVER", "gevent")
    prefix = Path(os.environ.get("GREENPOOL_RUN_PREFIX", ".run/nginx"))

    nginx = nginx_module.find_nginx()
    if nginx is None:
        say(
            "no nginx found (on PATH, /usr/sbin, or $NGINX): install it (apt-get install nginx), or run "
            "greenpool-serve alone: python -m greenpool.launch --worker-ports -w 2 -b 127.0.0.1:8001"
        )
        return 1
    taken = [p for p in [nginx_port, *range(app_port, app_port + workers)] if not port_free(p)]
    if taken:
        say(
            f"port(s) {', '.join(map(str, taken))} on 127.0.0.1 are taken: choose others with "
            "GREENPOOL_RUN_PORT / GREENPOOL_RUN_APP_PORT"
        )
        return 1

    root = nginx_module.prepare_prefix(prefix)
    control = root.parent / "control"  # the workers' stats sockets, next to the nginx prefix
    serve_args = [
        "--server",
        server,
        "--workers",
        str(workers),
        "--worker-ports",
        "--bind",
        f"127.0.0.1:{app_port}",
        "--control-dir",
        str(control),
    ]
    conf = root / "nginx.conf"
    config, _ = nginx_module.resolve(
        [
            "--workers",
            str(workers),
            "--worker-ports",
            "--bind",
            f"127.0.0.1:{app_port}",
            "--listen",
            f"127.0.0.1:{nginx_port}",
        ]
    )
    nginx_module.write_atomically(str(conf), nginx_module.render(config, standalone=True))
    ok, output = nginx_module.syntax_check(nginx, root, conf)
    if not ok:
        say(f"nginx -t failed for {conf}:\n{output}")
        return 1
    say(f"nginx config {conf} (nginx -t: ok)")

    # Each in a session of its own: Ctrl-C reaches only this script, which then
    # stops them in order (nginx first, so no request is sent to a stopping worker).
    app: subprocess.Popen | None = None
    proxy: subprocess.Popen | None = None
    stop_requested: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop_requested.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        app = subprocess.Popen(
            [sys.executable, "-m", "greenpool.launch", *serve_args],
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(signal.SIGTERM),
        )
        say(
            f"greenpool-serve master pid {app.pid}: {workers} {server} workers on 127.0.0.1:{app_port}"
            f"..{app_port + workers - 1}"
        )
        wait_until(
            "greenpool-serve",
            lambda: all(get(p, "/hello")[0] == 200 for p in range(app_port, app_port + workers)),
            {"greenpool-serve": app},
            READY_TIMEOUT,
            stop_requested,
        )
        proxy = subprocess.Popen(
            nginx_module.nginx_command(nginx, root, conf, "-g", "daemon off;"),
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent(signal.SIGQUIT),
        )
        say(f"nginx pid {proxy.pid} on 127.0.0.1:{nginx_port} (logs in {root / 'logs'})")
        wait_until(
            "nginx",
            lambda: get(nginx_port, "/hello")[0] == 200,
            {"greenpool-serve": app, "nginx": proxy},
            30.0,
            stop_requested,
        )
        seen = {get(nginx_port, "/whoami")[1].get("x-greenpool-worker") for _ in range(4 * workers)}
        base = f"http://127.0.0.1:{nginx_port}"
        show(
            f"\ngreenpool demo behind nginx: {base}/\n"
            f"  {base}/hello    no database\n"
            f"  {base}/read     three primary-key reads through the pool\n"
            f"  {base}/tx       a counter update in a transaction\n"
            f"  {base}/slow?s=0.5  SELECT SLEEP(0.5)\n"
            f"  {base}/whoami   which worker answered, and the client address it sees\n"
            f"workers answering through nginx: {', '.join(sorted(w for w in seen if w))}\n"
            f"pool stats: {sys.executable} -m greenpool.launch stats --control-dir {control}\n"
            f"rolling restart: kill -HUP {app.pid}\n"
            "Ctrl-C stops both.\n"
        )
        while not stop_requested:
            if app.poll() is not None or proxy.poll() is not None:
                say(f"{'greenpool-serve' if app.poll() is not None else 'nginx'} exited on its own: stopping")
                return 1
            time.sleep(0.2)
        say(f"{signal.Signals(stop_requested[0]).name}: stopping")
        return 0
    except StopRequested as exc:
        say(str(exc))
        return 0
    except RuntimeError as exc:
        say(str(exc))
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(proxy, signal.SIGQUIT, "nginx")
        stop(app, signal.SIGTERM, "greenpool-serve")
        if app is not None and proxy is not None:
            say(f"stopped: greenpool-serve exit {app.returncode}, nginx exit {proxy.returncode}")


if __name__ == "__main__":
    sys.exit(main())

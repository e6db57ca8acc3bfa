"""The stacks of the server benchmark, each declared once: label, how to start it, its settings.

bench.run starts one stack at a time (a fresh start for every measured cell), so
idle connections of one stack never count against another, and stops it by its
process group. Every stack serves the same demo site (greenpool.demo's views
through bench.django_settings; only DATABASES differs) with 2 worker processes,
except the bare gevent.pywsgi hello-world, which has no Django at all.

A Stack says which commands to start (``commands(ports, workdir)``), which of
its processes are the application's workers (children of the command marked
``role="app"``), where HTTP clients go (``front``), which paths it serves, and
the most server connections it may ever hold (``bound``), if it promises one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
WORKERS = 2
# The demo's pool (greenpool.demo.settings): GREENPOOL_DEMO_POOL_MAX_SIZE, default 5.
GREENPOOL_MAX_SIZE = 5
# Executor threads of the Tornado stacks (greenpool-serve's --threads default).
TORNADO_THREADS = 10
# Threads of Tornado's stock WSGIContainer stack (bench.tornado_stock).
PATHS = ("/hello", "/read", "/tx", "/slow")
DB_PATHS = ("/read", "/tx", "/slow")


@dataclass(frozen=True)
class Command:
    name: str  # "app", "nginx"
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    role: str = "app"  # "app": its children are the workers (or itself, with no children); "proxy": nginx
    stop_signal: str = "TERM"


@dataclass(frozen=True)
class Ports:
    app: int  # the application's port (workers with --worker-ports use app, app+1, ...)
    front: int  # where clients connect: app, or nginx's port


@dataclass(frozen=True)
class Stack:
    key: str
    label: str
    family: str  # greenpool (greenpool-serve) | gunicorn | uwsgi | tornado | bare
    commands: Callable[[Ports, Path], list[Command]]
    paths: tuple[str, ...] = PATHS
    # "default": PyMySQL's defaults; "tuned": ssl_disabled; "slow-pool": greenpool's pool sized
    # for slow queries (SLOW_POOL_SIZE). Only "default" rows are lines of the report's main plots,
    # and its targets never compare a "slow-pool" row.
    series: str = "default"
    bound: int | None = None  # most server connections it promises (workers x max_size)
    needs_nginx: bool = False
    worker_ports: int = 1  # consecutive app ports it needs
    control: bool = False  # greenpool-serve: stats through `greenpool-serve stats --control-dir`
    # Paths on which the stack cannot serve at all: probed with one request, not measured.
    probe_only: tuple[str, ...] = ()
    settings: str = ""  # what users would write, for the docs
    note: str = ""
    workers: int = WORKERS  # worker processes (the latency study's one-worker rows have 1)


def django_env(
    backend: str, conn_max_age: str = "0", tuned: bool = False, pool_size: int = GREENPOOL_MAX_SIZE
) -> dict[str, str]:
    env = {
        "DJANGO_SETTINGS_MODULE": "bench.django_settings",
        "GREENPOOL_BENCH_BACKEND": backend,
        "GREENPOOL_BENCH_CONN_MAX_AGE": conn_max_age,
        "GREENPOOL_BENCH_TUNED": "1" if tuned else "",
    }
    if backend == "greenpool":
        # A fixed-size pool, as docs/tuning.md advises for a steady load: every
        # connection is opened before the worker accepts, none during a run.
        env["GREENPOOL_DEMO_POOL_MIN_SIZE"] = str(pool_size)
        env["GREENPOOL_DEMO_POOL_MAX_SIZE"] = str(pool_size)
    return env


def control_dir(workdir: Path) -> str:
    return str(workdir / "control")


def _greenpool(
    server: str,
    *,
    tuned: bool = False,
    worker_ports: bool = False,
    extra: tuple[str, ...] = (),
    pool_size: int = GREENPOOL_MAX_SIZE,
    workers: int = WORKERS,
    env: dict[str, str] | None = None,
) -> Callable[[Ports, Path], list[Command]]:
    def commands(ports: Ports, workdir: Path) -> list[Command]:
        argv = [
            str(VENV_BIN / "greenpool-serve"),
            "--server",
            server,
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{ports.app}",
            "--control-dir",
            control_dir(workdir),
            "--log-level",
            "warning",
            *extra,
        ]
        if worker_ports:
            argv.append("--worker-ports")
        return [
            Command(
                "app",
                argv,
                {**django_env("greenpool", tuned=tuned, pool_size=pool_size), **(env or {})},
                stop_signal="INT",
            )
        ]

    return commands


def _gunicorn(
    worker_class: str, backend: str, conn_max_age: str = "0", *, tuned: bool = False, workers: int = WORKERS
) -> Callable[[Ports, Path], list[Command]]:
    def commands(ports: Ports, workdir: Path) -> list[Command]:
        argv = [
            str(VENV_BIN / "gunicorn"),
            "-k",
            worker_class,
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{ports.app}",
            "--log-level",
            "warning",
            "bench.wsgi:application",
        ]
        return [Command("app", argv, django_env(backend, conn_max_age, tuned), stop_signal="INT")]

    return commands


# Async cores per uWSGI worker: as many connections as a gevent worker of gunicorn or greenpool-serve takes.
UWSGI_CORES = 1000


def _uwsgi_gevent(ports: Ports, workdir: Path) -> list[Command]:
    # --gevent-early-monkey-patch: patched before Django is imported (with --gevent-monkey-patch
    # greenpool refuses every request, docs/deployment.md). SIGINT: uWSGI 2.0 takes TERM as "reload".
    argv = [
        str(VENV_BIN / "uwsgi"),
        "--http-socket",
        f"127.0.0.1:{ports.app}",
        "--master",
        "--processes",
        str(WORKERS),
        "--gevent",
        str(UWSGI_CORES),
        "--gevent-early-monkey-patch",
        "--home",
        sys.prefix,
        "--chdir",
        str(ROOT),
        "--module",
        "bench.wsgi:application",
        "--need-app",
        "--listen",
        "1024",
        "--disable-logging",
    ]
    return [Command("app", argv, django_env("greenpool"), stop_signal="INT")]


def _tornado_stock(mode: str, conn_max_age: str = "none") -> Callable[[Ports, Path], list[Command]]:
    def commands(ports: Ports, workdir: Path) -> list[Command]:
        argv = [
            sys.executable,
            "-m",
            "bench.tornado_stock",
            "--bind",
            f"127.0.0.1:{ports.app}",
            "--workers",
            str(WORKERS),
            "--mode",
            mode,
            "--threads",
            str(TORNADO_THREADS),
        ]
        return [Command("app", argv, django_env("django", conn_max_age))]

    return commands


def _bare(ports: Ports, workdir: Path) -> list[Command]:
    argv = [sys.executable, "-m", "bench.bare_hello", "--bind", f"127.0.0.1:{ports.app}", "--workers", str(WORKERS)]
    return [Command("app", argv, {})]


def _greenpool_nginx(ports: Ports, workdir: Path) -> list[Command]:
    from bench import nginx_conf

    app = _greenpool("gevent", worker_ports=True)(ports, workdir)
    conf = nginx_conf.write(workdir, app_port=ports.app, workers=WORKERS, listen_port=ports.front)
    return [*app, Command("nginx", nginx_conf.command(workdir, conf), {}, role="proxy", stop_signal="QUIT")]


def _gunicorn_sync_nginx(ports: Ports, workdir: Path) -> list[Command]:
    # The same nginx config as gp-nginx's, over gunicorn's one shared port (gunicorn's own
    # recommended deployment: a buffering proxy in front of sync workers).
    from bench import nginx_conf

    app = _gunicorn("sync", "django", "none")(ports, workdir)
    conf = nginx_conf.write(workdir, app_port=ports.app, workers=1, listen_port=ports.front)
    return [*app, Command("nginx", nginx_conf.command(workdir, conf), {}, role="proxy", stop_signal="QUIT")]


BOUND = WORKERS * GREENPOOL_MAX_SIZE
# The pool of the slow-query series sized for its load (a "tuned" row, labelled so):
# 200 clients waiting on SELECT SLEEP(0.05) want up to 200 connections; 20 per worker
# keeps 2 workers at 40 (the benchmark account's limit is 100), the most
# django-db-connection-pool's default POOL_OPTIONS open (DBPOOL_CEILING).
SLOW_POOL_SIZE = 20
SLOW_POOL_SERIES = "slow-pool"
# django-db-connection-pool's defaults (pool_size 10, max_overflow 10) per worker: the most
# connections gevent-dbpool may open. Not its `bound`: that field is kept for greenpool's
# ENGINE (the report checks it as a promise); the report shows this one as a ceiling.
DBPOOL_POOL_SIZE = 10
DBPOOL_MAX_OVERFLOW = 10
DBPOOL_CEILING = WORKERS * (DBPOOL_POOL_SIZE + DBPOOL_MAX_OVERFLOW)
GP_SETTINGS = (
    'ENGINE "greenpool.backends.mysql", CONN_MAX_AGE 0, CONN_HEALTH_CHECKS True, '
    "OPTIONS pool {max_size 5, min_size 5, timeout 10}"
)

STACKS: tuple[Stack, ...] = (
    Stack(
        "gp-gevent",
        "greenpool-serve gevent",
        "greenpool",
        _greenpool("gevent"),
        bound=BOUND,
        control=True,
        settings=f"`greenpool-serve -w 2` (gevent.pywsgi, 1000 connections per worker); {GP_SETTINGS}",
    ),
    Stack(
        "gp-gevent-reuseport",
        "greenpool-serve gevent --reuse-port",
        "greenpool",
        _greenpool("gevent", extra=("--reuse-port",)),
        paths=(),
        bound=BOUND,
        control=True,
        settings="as greenpool-serve gevent, with --reuse-port (each worker its own SO_REUSEPORT socket); "
        "latency study only",
    ),
    Stack(
        "gp-gevent-pool20",
        f"greenpool-serve gevent, max_size {SLOW_POOL_SIZE}",
        "greenpool",
        _greenpool("gevent", pool_size=SLOW_POOL_SIZE),
        # /slow only, and its own series: not a default row (no target compares it, the
        # throughput plots leave it out); the report's equal-budget table and plot put it
        # next to django-db-connection-pool, whose pools may hold as many connections.
        paths=("/slow",),
        series=SLOW_POOL_SERIES,
        bound=WORKERS * SLOW_POOL_SIZE,
        control=True,
        settings=f"as greenpool-serve gevent, with a pool sized for slow queries: max_size = min_size = "
        f"{SLOW_POOL_SIZE} ({WORKERS} x {SLOW_POOL_SIZE} = {WORKERS * SLOW_POOL_SIZE} server connections, "
        f"django-db-connection-pool's ceiling); /slow cells, the slow-query experiment and its memory comparison",
    ),
    Stack(
        "gp-gevent-nometrics",
        "greenpool-serve gevent, pool metrics off",
        "greenpool",
        _greenpool("gevent", env={"GREENPOOL_DEMO_POOL_METRICS": "0"}),
        paths=(),
        bound=BOUND,
        control=True,
        settings="as greenpool-serve gevent, with OPTIONS pool metrics False (no wait or hold histograms); "
        "bench.ab only, for what the histograms cost per request",
    ),
    Stack(
        "gp-gevent-w1",
        "greenpool-serve gevent, 1 worker",
        "greenpool",
        _greenpool("gevent", workers=1),
        paths=(),
        bound=GREENPOOL_MAX_SIZE,
        control=True,
        workers=1,
        settings="as greenpool-serve gevent, with -w 1; latency study only (one worker's share of the clients)",
    ),
    Stack(
        "gp-tornado",
        "greenpool-serve tornado (executor)",
        "greenpool",
        _greenpool("tornado"),
        bound=BOUND,
        control=True,
        settings=f"`greenpool-serve -w 2 --server tornado` (10 executor threads); {GP_SETTINGS}",
    ),
    Stack(
        "gp-tornado-auto",
        "greenpool-serve tornado, --threads auto",
        "greenpool",
        _greenpool("tornado", extra=("--threads", "auto")),
        bound=BOUND,
        control=True,
        paths=(),
        settings=f"as greenpool-serve tornado, with --threads auto ({GREENPOOL_MAX_SIZE} threads, the pool's "
        "max_size); bench.ab only, for what threads beyond max_size cost",
    ),
    Stack(
        "gp-nginx",
        "nginx + greenpool-serve gevent",
        "greenpool",
        _greenpool_nginx,
        bound=BOUND,
        control=True,
        needs_nginx=True,
        worker_ports=WORKERS,
        settings="nginx (config below) -> `greenpool-serve -w 2 --worker-ports`, least_conn, upstream keepalive; "
        + GP_SETTINGS,
    ),
    Stack(
        "sync-nginx",
        "nginx + gunicorn sync, CONN_MAX_AGE=None",
        "gunicorn",
        _gunicorn_sync_nginx,
        paths=("/read",),
        needs_nginx=True,
        settings="nginx (the same config as nginx + greenpool-serve's, one upstream server: gunicorn's "
        "shared port) -> `gunicorn -w 2` (sync); CONN_MAX_AGE None: the p99 target's reference behind nginx",
    ),
    Stack(
        "tornado-stock",
        "Tornado WSGIContainer + executor, CONN_MAX_AGE=None",
        "tornado",
        _tornado_stock("executor"),
        settings="Tornado 6 HTTPServer + WSGIContainer(executor=ThreadPoolExecutor(10)), 2 processes; "
        "Django's ENGINE django.db.backends.mysql, CONN_MAX_AGE None",
    ),
    Stack(
        "tornado-ioloop",
        "Tornado WSGIContainer on the IOLoop thread",
        "tornado",
        _tornado_stock("ioloop"),
        paths=("/hello",),
        probe_only=DB_PATHS,
        settings="Tornado 6 HTTPServer + WSGIContainer(app) (no executor: Django on the IOLoop thread), 2 processes; "
        "Django's ENGINE django.db.backends.mysql, CONN_MAX_AGE None",
    ),
    Stack(
        "sync-cma0",
        "gunicorn sync, CONN_MAX_AGE=0",
        "gunicorn",
        _gunicorn("sync", "django", "0"),
        paths=DB_PATHS,
        settings="`gunicorn -w 2` (sync); Django's ENGINE django.db.backends.mysql on PyMySQL, CONN_MAX_AGE 0 "
        "(Django's default)",
    ),
    Stack(
        "sync-persist",
        "gunicorn sync, CONN_MAX_AGE=None",
        "gunicorn",
        _gunicorn("sync", "django", "none"),
        settings="`gunicorn -w 2` (sync); Django's ENGINE django.db.backends.mysql on PyMySQL, CONN_MAX_AGE None",
    ),
    Stack(
        "sync-persist-w1",
        "gunicorn sync, CONN_MAX_AGE=None, 1 worker",
        "gunicorn",
        _gunicorn("sync", "django", "none", workers=1),
        paths=(),
        workers=1,
        settings="as gunicorn sync, CONN_MAX_AGE=None, with -w 1; latency study only",
    ),
    Stack(
        "gevent-cma0",
        "gunicorn gevent, CONN_MAX_AGE=0",
        "gunicorn",
        _gunicorn("gevent", "django", "0"),
        paths=DB_PATHS,
        settings="`gunicorn -k gevent -w 2` (1000 connections per worker); Django's ENGINE "
        "django.db.backends.mysql on PyMySQL, CONN_MAX_AGE 0",
    ),
    Stack(
        "gevent-persist",
        "gunicorn gevent, CONN_MAX_AGE=None",
        "gunicorn",
        _gunicorn("gevent", "django", "none"),
        settings="`gunicorn -k gevent -w 2`; Django's ENGINE django.db.backends.mysql on PyMySQL, CONN_MAX_AGE None",
    ),
    Stack(
        "gevent-greenpool",
        "gunicorn gevent + greenpool ENGINE",
        "gunicorn",
        _gunicorn("gevent", "greenpool"),
        bound=BOUND,
        settings="`gunicorn -k gevent -w 2` (1000 connections per worker), the ENGINE swap alone; " + GP_SETTINGS,
    ),
    Stack(
        "uwsgi-gevent-greenpool",
        "uWSGI gevent + greenpool ENGINE",
        "uwsgi",
        _uwsgi_gevent,
        bound=BOUND,
        settings=f"`uwsgi --http-socket --master --processes 2 --gevent {UWSGI_CORES} --gevent-early-monkey-patch "
        "--listen 1024` (the app loaded in the master, then forked; --http-socket closes the connection "
        "after each answer), the ENGINE swap alone; " + GP_SETTINGS,
    ),
    Stack(
        "gevent-dbpool",
        "gunicorn gevent + django-db-connection-pool",
        "gunicorn",
        _gunicorn("gevent", "dbpool", "0"),
        paths=DB_PATHS,
        settings="`gunicorn -k gevent -w 2`; ENGINE dj_db_conn_pool.backends.mysql with its default POOL_OPTIONS "
        f"(pool_size {DBPOOL_POOL_SIZE}, max_overflow {DBPOOL_MAX_OVERFLOW}, pre_ping, recycle 15 min: at most "
        f"{DBPOOL_CEILING} server connections)",
    ),
    Stack(
        "bare",
        "bare gevent.pywsgi hello-world (ceiling)",
        "bare",
        _bare,
        paths=("/hello",),
        settings="bench/bare_hello.py: gevent.pywsgi.WSGIServer, TCP_NODELAY, 2 forked processes, no Django",
    ),
)

# The "tuned" series: PyMySQL with ssl_disabled=True (no TLS context built per connect).
# Only the stacks that connect often are affected: the others connect once per worker
# or thread, and greenpool's pooled connections already reuse one TLS context.
TUNED: tuple[Stack, ...] = (
    Stack(
        "sync-cma0+tuned",
        "gunicorn sync, CONN_MAX_AGE=0, ssl_disabled",
        "gunicorn",
        _gunicorn("sync", "django", "0", tuned=True),
        paths=("/read",),
        series="tuned",
        settings="as gunicorn sync, CONN_MAX_AGE=0, with OPTIONS ssl_disabled True",
    ),
    Stack(
        "gevent-cma0+tuned",
        "gunicorn gevent, CONN_MAX_AGE=0, ssl_disabled",
        "gunicorn",
        _gunicorn("gevent", "django", "0", tuned=True),
        paths=("/read",),
        series="tuned",
        settings="as gunicorn gevent, CONN_MAX_AGE=0, with OPTIONS ssl_disabled True",
    ),
    Stack(
        "gevent-persist+tuned",
        "gunicorn gevent, CONN_MAX_AGE=None, ssl_disabled",
        "gunicorn",
        _gunicorn("gevent", "django", "none", tuned=True),
        paths=("/read",),
        series="tuned",
        settings="as gunicorn gevent, CONN_MAX_AGE=None, with OPTIONS ssl_disabled True",
    ),
)

ALL: dict[str, Stack] = {s.key: s for s in STACKS + TUNED}

# The stack every ratio is taken against (measured in the same cell of the same run).
REFERENCE = "sync-persist"

# The stacks whose /read cells the targets compare: measured in every round (bench.run
# FULL["rounds"]); the others once.
ROUND_STACKS = (
    "gp-gevent",
    "gp-tornado",
    "sync-persist",
    "gevent-persist",
    "gevent-persist+tuned",
    "gevent-dbpool",
    "tornado-stock",
    "gevent-greenpool",
    "uwsgi-gevent-greenpool",
    "gp-nginx",  # the p99 target behind nginx compares these two
    "sync-nginx",
)


def gunicorn_sync_with(workers: int) -> Stack:
    """gunicorn sync, CONN_MAX_AGE=None with as many workers as the memory comparison needs
    (at least 2: its key never clashes with the latency study's sync-persist-w1)."""
    return Stack(
        f"sync-persist-w{workers}",
        f"gunicorn sync, CONN_MAX_AGE=None, {workers} workers",
        "gunicorn",
        _gunicorn("sync", "django", "none", workers=workers),
        paths=("/slow",),
        workers=workers,
        settings=f"`gunicorn -w {workers}` (sync); CONN_MAX_AGE None",
    )


def missing_executable(stack: Stack) -> str | None:
    """The program a stack would start that is not installed (uWSGI comes with the test
    extra, not the bench one), or None. nginx is looked up by nginx_available()."""
    if stack.needs_nginx:
        return None
    for command in stack.commands(Ports(app=0, front=0), Path("/nonexistent")):  # builds argv only
        program = command.argv[0]
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            return program
    return None


def nginx_available() -> str | None:
    from bench import nginx_conf

    return nginx_conf.find_nginx()


def versions() -> dict[str, str]:
    """Versions of everything the stacks run."""
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in (
        "Django",
        "gevent",
        "greenlet",
        "PyMySQL",
        "gunicorn",
        "uWSGI",
        "tornado",
        "django-db-connection-pool",
        "SQLAlchemy",
        "greenpool",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    for name, argv in (("wrk", ["wrk", "--version"]), ("nginx", ["nginx", "-v"])):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            text = (proc.stdout + proc.stderr).strip().splitlines()
            out[name] = text[0] if text else "?"
        except (OSError, subprocess.TimeoutExpired):
            out[name] = "absent"
    return out


def env_for(command: Command, base: dict[str, str]) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("GREENPOOL_BENCH_") and k != "DJANGO_SETTINGS_MODULE"
    }
    env.update(base)
    env.update(command.env)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env

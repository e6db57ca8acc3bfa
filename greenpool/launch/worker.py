"""What both worker types share: the boot, the pools, stats, logs, the master link.

A worker is a fresh interpreter the master starts (``python -c``), so nothing
of the master (imported modules, sockets, database connections) leaks into it;
the gevent worker monkey-patches before anything else is imported. The master
hands over, in the environment variable GREENPOOL_WORKER_SPEC (JSON): the
worker's index, its listening sockets (inherited file descriptors), the write
end of a pipe back to the master and the settings.

Boot order: logging, the application (django.setup() happens here), every
database alias of settings.DATABASES (bad pool options fail now, not on the
first request; pools open min_size connections), the listening sockets, then
"ready" to the master. A failure exits with a named code from errors.ExitCode.
"""

from __future__ import annotations

import array
import fcntl
import importlib
import ipaddress
import json
import logging
import os
import random
import socket
import struct
import sys
import termios
import time
import traceback
from collections.abc import Callable
from typing import Any

from greenpool import mysql_errors
from greenpool.launch import budget, logs
from greenpool.launch.errors import ExitCode, LaunchError
from greenpool.metrics import REQUEST_BUCKETS, Histogram
from greenpool.metrics import snapshot as metrics_snapshot

SPEC_ENV = "GREENPOOL_WORKER_SPEC"

logger = logging.getLogger("greenpool.launch")

#: During a drain, a keep-alive connection idle this long is closed; one that
#: sends a request sooner gets its answer with Connection: close.
DRAIN_IDLE_SECONDS = 0.5

# How many connections a worker accepts per wake-up of its listening socket.
# Workers that share one socket are all woken by a connect; one that accepted
# everything waiting (gevent's default is 100, Tornado's 128) could take a whole
# burst of keep-alive connections and leave its siblings idle for as long as
# those connections live (measured: all 100 of wrk's connections on one of two
# Tornado workers, half the throughput). One per wake-up is balanced but slow
# when the worker is busy: a busy gevent worker wakes for its listening socket
# once per hub turn, every few tens of ms, so 500 new connections waited up to
# 4.6 s in the accept queue (wrk -c500 on /read: the queue, as `ss -lt` shows
# it, took that long to drain; p99 5.7 s). So a worker takes its share of what
# is waiting: the queue's length divided by the workers sharing the socket,
# rounded up, between 1 and ACCEPT_MAX (accept_budget). Where the queue's
# length cannot be read (unix sockets, non-Linux) it takes ACCEPT_BATCH.
ACCEPT_BATCH = 1
ACCEPT_MAX = 64

# struct tcp_info (linux/tcp.h): eight one-byte fields, then u32 rto, ato,
# snd_mss, rcv_mss, unacked. For a listening socket the kernel reports the
# accept queue's current length in tcpi_unacked (what `ss -lt` shows as Recv-Q).
_TCP_INFO_UNACKED = struct.Struct("=I")
_TCP_INFO_UNACKED_OFFSET = 24
_TCP_INFO_SIZE = 104


def pending_connections(sock: socket.socket) -> int | None:
    """Connections waiting in a TCP listening socket's accept queue, or None
    where the platform or socket family does not tell."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:  # closed meanwhile, or a kernel without tcp_info
        return None
    if len(info) < _TCP_INFO_UNACKED_OFFSET + _TCP_INFO_UNACKED.size:
        return None
    return int(_TCP_INFO_UNACKED.unpack_from(info, _TCP_INFO_UNACKED_OFFSET)[0])


def accept_budget(sock: socket.socket, shared_by: int) -> int:
    """How many connections to accept now: this worker's share of the queue
    (see ACCEPT_BATCH above)."""
    pending = pending_connections(sock)
    if pending is None:
        return ACCEPT_BATCH
    share = -(-pending // max(1, shared_by))  # ceil
    return max(1, min(ACCEPT_MAX, share))


def has_unread_bytes(sock: Any) -> bool:
    """True when bytes wait in the socket's receive queue (FIONREAD; no read, no
    wait). The drain checks it just before it closes an "idle" keep-alive
    connection: a request that has already arrived there, but that the server
    has not read yet, would otherwise be cut off unanswered, and nginx cannot
    pass a cut-off POST on to another worker (502)."""
    if sock is None:  # already closed (Tornado drops a closed stream's socket)
        return False
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf, True)
        return buf[0] > 0
    except (OSError, ValueError):  # closed meanwhile: nothing to protect
        return False


def read_spec() -> dict[str, Any]:
    raw = os.environ.get(SPEC_ENV)
    if not raw:
        raise SystemExit(f"{SPEC_ENV} is not set: workers are started by greenpool-serve, not by hand")
    return json.loads(raw)


# -- the application -------------------------------------------------------------


def load_app(app_spec: str | None) -> Callable[..., Any]:
    """Import APP (module:callable) or DJANGO_SETTINGS_MODULE's WSGI_APPLICATION."""
    if app_spec:
        module_name, _, attr = app_spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                raise LaunchError(
                    ExitCode.APP_LOAD_ERROR,
                    f"cannot import APP {app_spec!r}: no module named {exc.name!r} "
                    f"(working directory {os.getcwd()}; is it on sys.path?)",
                ) from None
            raise _boot_error(exc, f"importing APP {app_spec!r}") from None
        except Exception as exc:
            raise _boot_error(exc, f"importing APP {app_spec!r}") from None
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise LaunchError(
                    ExitCode.APP_LOAD_ERROR,
                    f"cannot load APP {app_spec!r}: module {module_name!r} has no attribute {attr!r}",
                ) from None
        if not callable(obj):
            raise LaunchError(
                ExitCode.APP_LOAD_ERROR, f"APP {app_spec!r} is a {type(obj).__name__}, not a WSGI callable"
            )
        return obj
    settings_module = os.environ.get("DJANGO_SETTINGS_MODULE")
    if not settings_module:
        raise LaunchError(ExitCode.APP_LOAD_ERROR, "no APP given and DJANGO_SETTINGS_MODULE is not set")
    try:
        import django
        from django.core.servers.basehttp import get_internal_wsgi_application

        django.setup(set_prefix=False)
        return get_internal_wsgi_application()
    except ModuleNotFoundError as exc:
        if exc.name and settings_module.startswith(exc.name):
            raise LaunchError(
                ExitCode.CONFIG_ERROR,
                f"cannot import DJANGO_SETTINGS_MODULE {settings_module!r}: no module named {exc.name!r}",
            ) from None
        raise _boot_error(exc, f"loading DJANGO_SETTINGS_MODULE {settings_module!r}") from None
    except Exception as exc:
        raise _boot_error(exc, f"loading DJANGO_SETTINGS_MODULE {settings_module!r}") from None


def _boot_error(exc: BaseException, doing: str) -> LaunchError:
    try:
        from django.core.exceptions import ImproperlyConfigured
    except ImportError:  # pragma: no cover - Django is a dependency
        ImproperlyConfigured = ()  # type: ignore[assignment,misc]
    if isinstance(exc, ImproperlyConfigured):
        return LaunchError(ExitCode.CONFIG_ERROR, f"Django settings are invalid ({doing}): {exc}")
    detail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return LaunchError(ExitCode.APP_LOAD_ERROR, f"{doing} failed: {type(exc).__name__}: {exc}\n{detail}")


def django_ready() -> bool:
    if "django" not in sys.modules:
        return False
    from django.apps import apps
    from django.conf import settings

    return bool(settings.configured and apps.ready)


def describe_db(settings_dict: dict[str, Any]) -> str:
    return f"{settings_dict.get('USER') or '?'}@{settings_dict.get('HOST') or 'localhost'}:{settings_dict.get('PORT') or 3306}/{settings_dict.get('NAME')}"


#: The least time open_pools gives one alias, once --db-boot-timeout is used up.
_BOOT_WAIT_FLOOR = 0.25

#: A worker that asked for a replacement (--max-requests) asks again this often
#: until it is draining: the master drops the request when a rolling restart
#: stops (a replacement that failed to boot).
RECYCLE_REPEAT_SECONDS = 5.0


def open_pools(boot_timeout: float, require_db: bool) -> dict[str, str]:
    """Build and open the pool of every alias in settings.DATABASES.

    Touching ``connections[alias]`` validates its OPTIONS (ImproperlyConfigured
    -> CONFIG_ERROR). A pool opens min_size connections and one is checked
    out and back, so an unreachable server shows at boot. A database that
    refuses the login (wrong password, unknown database) or whose host name
    does not resolve is a configuration error (CONFIG_ERROR): waiting will not
    cure it. Returns alias -> "ok" / the reason it is unavailable.
    """
    if not django_ready():
        return {}
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.db import connections

    status: dict[str, str] = {}
    # One deadline for every alias (a short floor each, so that one dead server
    # does not leave the next one no time at all).
    deadline = time.monotonic() + boot_timeout
    for alias in settings.DATABASES:
        try:
            wrapper = connections[alias]
            pool = getattr(wrapper, "pool", None)
        except ImproperlyConfigured as exc:
            raise LaunchError(ExitCode.CONFIG_ERROR, f"DATABASES[{alias!r}] is invalid: {exc}") from None
        if pool is None:
            status[alias] = "not pooled"
            continue
        where = describe_db(wrapper.settings_dict)
        try:
            pool.open(wait=True, timeout=max(deadline - time.monotonic(), _BOOT_WAIT_FLOOR))
            # A checkout proves the server answers, also with min_size=0,
            # where open(wait=True) opens nothing.
            with pool.connection(timeout=max(deadline - time.monotonic(), _BOOT_WAIT_FLOOR)):
                pass
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            permanent = mysql_errors.permanent_connect_error(exc)
            if permanent is not None:
                raise LaunchError(
                    ExitCode.CONFIG_ERROR,
                    f"database {alias!r} ({where}) cannot be used: {permanent}; "
                    f"check DATABASES[{alias!r}] (USER, PASSWORD, NAME, HOST): waiting will not help",
                ) from None
            if require_db:
                raise LaunchError(
                    ExitCode.DATABASE_UNAVAILABLE,
                    f"database {alias!r} ({where}) did not answer within {boot_timeout:g}s at boot: {reason}",
                ) from None
            logger.warning(
                "database %r (%s) unavailable at boot: %s; serving anyway, requests that need it get "
                "503 until it answers (use --require-db to exit instead)",
                alias,
                where,
                reason,
            )
            status[alias] = reason
            continue
        logger.info("pool %r open: %s, min_size=%d max_size=%d", pool.name, where, pool.min_size, pool.max_size)
        status[alias] = "ok"
    return status


def close_pools(timeout: float = 5.0) -> None:
    """Close this process's pools: idle connections say goodbye (COM_QUIT), so
    the server's Aborted_clients does not rise."""
    try:
        from greenpool import registry

        registry.close_all(timeout)
    except Exception as exc:  # at exit: report, do not mask the exit
        logger.warning("closing the pools failed: %s", exc)


def pool_stats() -> dict[str, Any]:
    if "greenpool.registry" not in sys.modules:
        return {}
    from greenpool import registry

    return {alias: pool.get_stats() for alias, pool in registry.pools().items()}


# -- the proxy headers -------------------------------------------------------------


class ForwardedPolicy:
    """Which peers may set X-Forwarded-For / X-Real-IP / X-Forwarded-Proto."""

    def __init__(self, allow: list[str]) -> None:
        self.any = "*" in allow
        self.networks = [ipaddress.ip_network(a, strict=False) for a in allow if a != "*"]

    def trusts(self, peer: str | None) -> bool:
        if self.any or not peer:  # unix-socket peers have no address: always trusted
            return True
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(ip in net for net in self.networks)

    def apply(self, environ: dict[str, Any]) -> None:
        """Tornado's xheaders rules, for the gevent worker: the last
        X-Forwarded-For hop, overridden by X-Real-IP; the scheme from
        X-Scheme or X-Forwarded-Proto."""
        if not self.trusts(environ.get("REMOTE_ADDR")):
            return
        ip = environ.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        ip = environ.get("HTTP_X_REAL_IP", ip).strip()
        if ip and _is_ip(ip):
            environ["REMOTE_ADDR"] = ip
        proto = environ.get("HTTP_X_SCHEME", environ.get("HTTP_X_FORWARDED_PROTO", "")).split(",")[-1].strip().lower()
        if proto in ("http", "https"):
            environ["wsgi.url_scheme"] = proto


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


# -- the worker's state and stats --------------------------------------------------


class WorkerState:
    """Counters and the worker's life cycle, shared by the server code."""

    def __init__(self, spec: dict[str, Any], imported_before_patch: list[str] | None = None) -> None:
        settings = spec["settings"]
        self.spec = spec
        self.settings = settings
        self.index: int = spec["index"]
        self.generation: int = spec["generation"]
        self.pid = os.getpid()
        self.worker_id = f"{self.index}-{self.pid}"
        self.server: str = settings["server"]
        self.started_at = time.time()
        self.ready = False
        self.draining = False
        self.recycle_requested = False
        self.recycle_asked_at = 0.0
        self.imported_before_patch = imported_before_patch
        self.requests = 0
        self.in_flight = 0
        self.by_class = {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
        self.time_ms_total = 0.0
        self.time_ms_max = 0.0
        self.duration = Histogram(REQUEST_BUCKETS)
        self.connections_open = 0
        self.connections_total = 0
        max_requests = settings["max_requests"]
        if max_requests:
            max_requests += random.randint(0, settings["max_requests_jitter"])
        self.max_requests: int = max_requests
        self.db_status: dict[str, str] = {}
        self.forwarded = ForwardedPolicy(settings["forwarded_allow_ips"])
        self.master = MasterLink(spec.get("pipe_fd"), spec.get("master_pid"))
        os.environ["GREENPOOL_WORKER_INDEX"] = str(self.index)

    def request_started(self) -> None:
        self.in_flight += 1

    def request_finished(self, status: int, seconds: float) -> None:
        self.in_flight -= 1
        self.requests += 1
        key = f"{max(1, min(status // 100, 5))}xx"
        self.by_class[key] = self.by_class.get(key, 0) + 1
        self.duration.observe(seconds)
        ms = seconds * 1000.0
        self.time_ms_total += ms
        if ms > self.time_ms_max:
            self.time_ms_max = ms
        if self.max_requests and self.requests >= self.max_requests and not self.recycle_requested:
            self.recycle_requested = True
            self.recycle_asked_at = time.monotonic()
            logger.info("served %d requests (--max-requests): asking the master for a replacement", self.requests)
            self.master.send("recycle")

    def repeat_recycle(self) -> None:
        """With each heartbeat: ask again for a replacement that has not come."""
        if (
            self.recycle_requested
            and not self.draining
            and time.monotonic() - self.recycle_asked_at >= RECYCLE_REPEAT_SECONDS
        ):
            self.recycle_asked_at = time.monotonic()
            self.master.send("recycle")

    @property
    def closing(self) -> bool:
        """True when responses should carry Connection: close."""
        return self.draining

    def stats(self) -> dict[str, Any]:
        return {
            "worker": {
                "index": self.index,
                "pid": self.pid,
                "id": self.worker_id,
                "generation": self.generation,
                "server": self.server,
                "uptime_s": round(time.time() - self.started_at, 3),
                "ready": self.ready,
                "draining": self.draining,
                "max_requests": self.max_requests,
                "imported_before_patch": self.imported_before_patch,
                "databases_at_boot": self.db_status,
                "listen": self.spec.get("listen_names", []),
            },
            "requests": {
                "total": self.requests,
                "in_flight": self.in_flight,
                **{f"status_{k}": v for k, v in self.by_class.items()},
                "time_ms_total": round(self.time_ms_total, 3),
                "time_ms_max": round(self.time_ms_max, 3),
                "connections_open": self.connections_open,
                "connections_total": self.connections_total,
            },
            "pools": pool_stats(),
            "duration": self.duration.snapshot(),
            "metrics": metrics_snapshot(),
        }

    def access_log(
        self, remote: str | None, request_line: str, status: int, length: int | None, seconds: float
    ) -> None:
        logs.log_access(remote, request_line, status, length, seconds, self.worker_id)


class MasterLink:
    """The write end of the pipe to the master: ready, heartbeats, recycle."""

    def __init__(self, fd: int | None, master_pid: int | None) -> None:
        self.fd = fd
        self.master_pid = master_pid
        if fd is not None:
            os.set_blocking(fd, False)

    def send(self, message: str) -> bool:
        """False when the master is gone (the worker should then stop)."""
        if self.fd is None:
            return True
        try:
            os.write(self.fd, message.encode() + b"\n")
        except BlockingIOError:
            return True  # master busy; a heartbeat can be skipped
        except OSError:
            return False
        return True

    def master_alive(self) -> bool:
        return self.master_pid is None or os.getppid() == self.master_pid


def heartbeat_interval(settings: dict[str, Any]) -> float:
    timeout = settings["timeout"]
    return min(max(timeout / 4.0, 0.2), 2.0) if timeout else 2.0


def fail(code: ExitCode, message: str) -> None:
    """Log why the worker cannot boot and exit with ``code``."""
    logger.error("worker failed to boot: %s", message)
    logging.shutdown()
    sys.stderr.flush()
    os._exit(int(code))


def boot(state: WorkerState) -> Callable[..., Any]:
    """Load the app and open the pools; exit with a named code on failure."""
    settings = state.settings
    try:
        app = load_app(settings.get("app"))
        state.db_status = open_pools(
            settings["db_boot_timeout"], settings["require_db"] or state.spec.get("check_only", False)
        )
        if state.spec.get("check_budget") and any(s == "ok" for s in state.db_status.values()):
            budget.check(settings)
    except LaunchError as exc:
        fail(exc.code, exc.message)
    except Exception as exc:  # anything else at boot: a named code and the traceback
        fail(ExitCode.WORKER_BOOT_ERROR, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return app


def check_only_exit(state: WorkerState) -> None:
    close_pools()
    logger.info("check passed: APP loads, databases answer (%s)", state.db_status or "no Django databases")
    logging.shutdown()
    os._exit(0)


def control_path(spec: dict[str, Any]) -> str | None:
    return spec.get("control_path")


def serialize_stats(state: WorkerState) -> bytes:
    return json.dumps(state.stats(), sort_keys=True).encode() + b"\n"

"""What both worker types share: the spec, the boot, the worker's state and stats,
the master link. (Their life cycle is worker_life.py; the databases they open,
databases.py; their client sockets, client_sockets.py; the proxy headers,
forwarded.py.)

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

import importlib
import json
import logging
import os
import random
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from greenpool.launch import budget, databases, forwarded, logs
from greenpool.launch.errors import ExitCode, LaunchError
from greenpool.metrics import REQUEST_BUCKETS, Histogram
from greenpool.metrics import snapshot as metrics_snapshot

SPEC_ENV = "GREENPOOL_WORKER_SPEC"

logger = logging.getLogger("greenpool.launch")

#: During a drain, a keep-alive connection idle this long is closed; one that
#: sends a request sooner gets its answer with Connection: close.
DRAIN_IDLE_SECONDS = 0.5

#: A worker that asked for a replacement (--max-requests) asks again this often
#: until it is draining: the master drops the request when a rolling restart
#: stops (a replacement that failed to boot).
RECYCLE_REPEAT_SECONDS = 5.0


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
        self.forwarded = forwarded.ForwardedPolicy(settings["forwarded_allow_ips"])
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
            "pools": databases.pool_stats(),
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
        state.db_status = databases.open_pools(
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
    databases.close_pools()
    logger.info("check passed: APP loads, databases answer (%s)", state.db_status or "no Django databases")
    logging.shutdown()
    os._exit(0)


def control_path(spec: dict[str, Any]) -> str | None:
    return spec.get("control_path")


def serialize_stats(state: WorkerState) -> bytes:
    return json.dumps(state.stats(), sort_keys=True).encode() + b"\n"

"""Every greenpool-serve setting, declared once.

``SETTINGS`` is the one list: each entry has a name, its flags, a validator, a
default and a help text. The argument parser, the environment fallbacks
(``GREENPOOL_<NAME>``), the --config file reader, --print-config and the
reference page docs/settings-launcher.md are all made from it::

    python -m greenpool.launch.config --markdown > docs/settings-launcher.md

Precedence, highest first: command line, environment, --config file, default.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import ipaddress
import math
import os
import re
import runpy
import sys
import tempfile
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from greenpool.launch.errors import ExitCode, LaunchError
from greenpool.launch.sockets import Address, parse_address

PROG = "greenpool-serve"


# -- validators: take a string (command line, environment) or a Python value
# -- (config file), return the typed value, raise ValueError naming the problem.


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    expected = f"an integer >= {minimum}" if maximum is None else f"an integer from {minimum} to {maximum}"

    def validate(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected {expected}, got {value!r}")
        try:
            number = int(value, 10) if isinstance(value, str) else int(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: float("inf")
            raise ValueError(f"expected {expected}, got {value!r}") from None
        if isinstance(value, float) and value != number:
            raise ValueError(f"expected {expected}, got {value!r}")
        if number < minimum or (maximum is not None and number > maximum):
            raise ValueError(f"expected {expected}, got {number}")
        return number

    validate.__doc__ = f"integer >= {minimum}" if maximum is None else f"integer {minimum}..{maximum}"
    return validate


def _seconds(minimum: float, *, exclusive: bool = False) -> Callable[[Any], float]:
    op = ">" if exclusive else ">="

    def validate(value: Any) -> float:
        try:
            if isinstance(value, bool):
                raise TypeError
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number of seconds {op} {minimum:g}, got {value!r}") from None
        # Not NaN, not infinite: every wait in the launcher has a bound, and
        # inf would lift it (and nginx-config cannot write it).
        if not math.isfinite(number) or number < minimum or (exclusive and number == minimum):
            raise ValueError(f"expected a finite number of seconds {op} {minimum:g}, got {value!r}")
        return number

    validate.__doc__ = f"seconds {op} {minimum:g}"
    return validate


def _timeout(value: Any) -> float:
    """0 (off) or at least 1 s: workers send a heartbeat every 0.2 s at best, so a
    shorter --timeout would kill healthy workers."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if number != 0 and not (number >= 1 and math.isfinite(number)):  # NaN fails both
        raise ValueError(
            f"--timeout must be 0 (off) or at least 1 second (workers signal the master every "
            f"0.2 to 2 s), got {value!r}"
        )
    return number


_timeout.__doc__ = "0 (off), or seconds >= 1"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"expected true or false (1/0, yes/no, on/off), got {value!r}")


_boolean.__doc__ = "true or false"


# The package each --server runs on, and the extra that installs it (setup.cfg).
SERVER_PACKAGES = {"gevent": "gevent", "tornado": "tornado"}

# --threads by default, and what auto means without a pooled default database.
DEFAULT_THREADS = 10


def _threads(value: Any) -> int | str:
    if value == "auto":
        return "auto"
    try:
        return _int_at_least(1)(value)
    except ValueError:
        raise ValueError(f"expected an integer >= 1 or auto, got {value!r}") from None


_threads.__doc__ = "integer >= 1, or auto"


def _choice(*choices: str) -> Callable[[Any], str]:
    def validate(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    validate.__doc__ = " or ".join(choices)
    return validate


def _share(value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a share above 0 and at most 1 (0.8 = 80%), got {value!r}") from None
    if not 0 < number <= 1:
        raise ValueError(f"expected a share above 0 and at most 1 (0.8 = 80%), got {value!r}")
    return number


_share.__doc__ = "a number above 0, at most 1"


def _optional_path(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file path, got {value!r}")
    return value


_optional_path.__doc__ = "file path"


def _metrics_address(value: Any) -> str | None:
    if value is None:
        return None
    address = parse_address(str(value))
    if address.kind != "tcp":
        raise ValueError(f"{value!r}: expected HOST:PORT (Prometheus scrapes over TCP)")
    return str(address)


_metrics_address.__doc__ = "HOST:PORT"


def _log_target(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected a file path or '-', got {value!r}")
    return value


_log_target.__doc__ = "file path, or - for the standard stream"

_APP_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*(:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*)?$")


def _app(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _APP_RE.match(value.strip()):
        raise ValueError(f"expected module:callable (e.g. mysite.wsgi:application), got {value!r}")
    value = value.strip()
    return value if ":" in value else f"{value}:application"


_app.__doc__ = "module:callable"


def _split_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [part for part in re.split(r"[,\s]+", value) if part]
    if isinstance(value, (list, tuple)):
        return [str(part) for part in value]
    raise ValueError(f"expected a list or a comma-separated string, got {value!r}")


def _binds(value: Any) -> list[str]:
    items = _split_list(value)
    if not items:
        raise ValueError("expected at least one address")
    return [str(parse_address(item)) for item in items]


_binds.__doc__ = "HOST:PORT or unix:PATH; repeat for more"


def _ip_list(value: Any) -> list[str]:
    items = _split_list(value)
    for item in items:
        if item == "*":
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (use * to trust every peer)") from None
    return items


_ip_list.__doc__ = "comma-separated IPs or networks, or *"


def _listen(value: Any) -> str:
    """nginx's listen address: PORT, HOST:PORT, [IPV6]:PORT or unix:PATH."""
    text = str(value).strip()
    if text.isdigit():
        text = f":{text}"
    return str(parse_address(text))


_listen.__doc__ = "PORT, HOST:PORT, [IPV6]:PORT or unix:PATH"

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")


def _hosts(value: Any) -> list[str]:
    items = _split_list(value)
    for item in items:
        try:
            ipaddress.ip_address(item.strip("[]"))
        except ValueError:
            if not _HOST_RE.match(item):
                raise ValueError(f"{item!r} is not an IP address or a host name") from None
    return [item.strip("[]") for item in items]


_hosts.__doc__ = "IP addresses or host names, comma-separated"

_NAME_RE = re.compile(r"^[A-Za-z0-9_.*~^$\\-]+$")


def _server_names(value: Any) -> list[str]:
    items = _split_list(value)
    if not items:
        raise ValueError("expected at least one server name (_ matches any)")
    for item in items:
        if not _NAME_RE.match(item):
            raise ValueError(f"{item!r} is not an nginx server name")
    return items


_server_names.__doc__ = "nginx server names, comma-separated (_ matches any)"


def _size(value: Any) -> str:
    text = str(value).strip()
    if not re.fullmatch(r"\d+[kKmMgG]?", text):
        raise ValueError(f"expected an nginx size such as 10m, 512k or 0 (no limit), got {value!r}")
    return text


_size.__doc__ = "nginx size: bytes, or a number with k, m or g"


@dataclass(frozen=True)
class Setting:
    name: str
    flags: tuple[str, ...]  # () for the positional APP
    validator: Callable[[Any], Any]
    default: Any
    help: str
    section: str
    kind: str = "value"  # "value", "flag" (boolean), "list" (repeatable)
    metavar: str | None = None
    env: bool = True  # GREENPOOL_<NAME> fallback
    commands: tuple[str, ...] = ("serve",)
    choices: tuple[str, ...] | None = None

    @property
    def env_var(self) -> str | None:
        return f"GREENPOOL_{self.name.upper()}" if self.env else None

    def validate(self, value: Any) -> Any:
        return self.validator(value)


SETTINGS: tuple[Setting, ...] = (
    # -- what to serve
    Setting(
        "app",
        (),
        _app,
        None,
        "The WSGI application, as module:callable (module alone means module:application). "
        "Without it: DJANGO_SETTINGS_MODULE's WSGI_APPLICATION, and without that the bundled "
        "demo site (greenpool.demo), which is migrated and seeded once at start.",
        "Application",
        metavar="APP",
    ),
    Setting(
        "server",
        ("--server",),
        _choice(*SERVER_PACKAGES),
        "gevent",
        "Worker type. gevent: monkey-patched worker, gevent.pywsgi with a bounded pool of "
        "--worker-connections greenlets. tornado: Tornado HTTPServer, Django in a pool of "
        "--threads executor threads (never on the IOLoop thread).",
        "Application",
        choices=tuple(SERVER_PACKAGES),
    ),
    Setting(
        "config",
        ("-c", "--config"),
        _optional_path,
        None,
        "A Python file whose top-level names set these settings (workers = 4, "
        "bind = ['127.0.0.1:8001']). Unknown names are an error.",
        "Application",
        metavar="FILE",
        commands=("serve", "nginx-config"),
    ),
    Setting(
        "check_config",
        ("--check-config",),
        _boolean,
        False,
        "Validate the settings, load the application in a worker-like process, open every "
        "database pool once, then exit: 0 if all is well, else the named exit code (128 + the "
        "signal's number when TERM, INT, QUIT or HUP stops it; its worker is killed first).",
        "Application",
        kind="flag",
        env=False,
    ),
    Setting(
        "print_config",
        ("--print-config",),
        _boolean,
        False,
        "Print every setting with its value and where the value came from, then exit.",
        "Application",
        kind="flag",
        env=False,
    ),
    # -- sockets
    Setting(
        "bind",
        ("-b", "--bind"),
        _binds,
        ["127.0.0.1:8000"],
        "Address to listen on: HOST:PORT, [IPV6]:PORT or unix:PATH. Repeat the flag (or "
        "separate with commas in the environment) to listen on several.",
        "Sockets",
        kind="list",
        metavar="ADDRESS",
        commands=("serve", "stats", "nginx-config"),
    ),
    Setting(
        "worker_ports",
        ("--worker-ports",),
        _boolean,
        False,
        "Give each worker its own port: worker i listens on the bound port + i (a unix "
        "path gets .i appended). For nginx's least_conn over one upstream server per worker. "
        "Without it all workers share one listening socket.",
        "Sockets",
        kind="flag",
        commands=("serve", "nginx-config"),
    ),
    Setting(
        "reuse_port",
        ("--reuse-port",),
        _boolean,
        False,
        "Shared port only: each worker binds its own socket with SO_REUSEPORT and the kernel "
        "spreads connections evenly, instead of the workers accepting from one inherited socket. "
        "Each worker then has its own listen queue: when a worker stops (HUP, --max-requests, "
        "TTOU, a crash) the connections queued on its socket and not yet accepted are reset, "
        "unless the kernel migrates them (net.ipv4.tcp_migrate_req=1, Linux 5.14+). Behind "
        "nginx prefer the shared socket or --worker-ports.",
        "Sockets",
        kind="flag",
    ),
    # listen() takes a C int; the kernel caps it at net.core.somaxconn anyway.
    Setting(
        "backlog",
        ("--backlog",),
        _int_at_least(1, 65535),
        2048,
        "Listen queue length: connections that wait to be accepted (also while a worker restarts).",
        "Sockets",
        metavar="INT",
    ),
    # -- workers
    Setting(
        "workers",
        ("-w", "--workers"),
        _int_at_least(1),
        1,
        "Number of worker processes. Each has its own database pools, so the server sees at "
        "most workers x max_size connections per alias. Start with the number of cores.",
        "Workers",
        metavar="INT",
        commands=("serve", "nginx-config"),
    ),
    Setting(
        "worker_connections",
        ("--worker-connections",),
        _int_at_least(1),
        1000,
        "gevent: most connections one worker serves at once; past it, it stops accepting "
        "until one ends. Requests beyond the pool's max_size wait for a database connection.",
        "Workers",
        metavar="INT",
    ),
    Setting(
        "threads",
        ("--threads",),
        _threads,
        DEFAULT_THREADS,
        "tornado: executor threads running Django per worker. auto: the max_size of the "
        f"default database's pool, or {DEFAULT_THREADS} without a pool: threads beyond "
        "max_size only queue on the pool, but requests beyond the threads wait in the "
        "executor's queue, where the pool's timeout does not bound their wait "
        "(docs/tuning.md). 1 means one request at a time and one database connection per process.",
        "Workers",
        metavar="INT|auto",
    ),
    Setting(
        "timeout",
        ("-t", "--timeout"),
        _timeout,
        30.0,
        "A worker that has not signalled the master for this many seconds (a blocked event "
        "loop) is killed and replaced. 0 turns the check off; otherwise at least 1 s (workers "
        "send a heartbeat every 0.2 to 2 s).",
        "Workers",
        metavar="SECONDS",
    ),
    Setting(
        "graceful_timeout",
        ("--graceful-timeout",),
        _seconds(0, exclusive=True),
        30.0,
        "On TERM (and on HUP, --max-requests, TTOU), how long in-flight requests may take to "
        "finish before the worker exits anyway.",
        "Workers",
        metavar="SECONDS",
    ),
    Setting(
        "keep_alive",
        ("--keep-alive",),
        _seconds(0, exclusive=True),
        75.0,
        "Seconds an idle keep-alive connection is kept open. Keep it longer than nginx's "
        "upstream keepalive_timeout (60 s by default), or nginx reuses connections the "
        "worker is closing and answers 502. Also the most a request's headers may take to "
        "arrive after its request line (gevent: then a 400 and the connection is closed; "
        "Tornado's idle_connection_timeout, set from it, bounds them too).",
        "Workers",
        metavar="SECONDS",
        commands=("serve", "nginx-config"),
    ),
    Setting(
        "limit_request_line",
        ("--limit-request-line",),
        _int_at_least(64, 8190),
        8190,
        "Longest request line (method, target, version) in bytes; a longer one gets 414. At most "
        "8190, as gunicorn's limit_request_line (default 4094): gevent.pywsgi answers 414 itself "
        "from 8192 bytes. nginx's large_client_header_buffers (8k) refuses longer ones before they "
        "reach a worker.",
        "Workers",
        metavar="BYTES",
    ),
    Setting(
        "limit_request_fields",
        ("--limit-request-fields",),
        _int_at_least(1, 32768),
        100,
        "Most header fields in a request; more get 431. gunicorn's limit_request_fields (default 100).",
        "Workers",
        metavar="INT",
    ),
    Setting(
        "limit_request_field_size",
        ("--limit-request-field-size",),
        _int_at_least(64, 65536),
        8190,
        "Longest header field (name, colon and value) in bytes; a longer one gets 431. gunicorn's "
        "limit_request_field_size (default 8190). Tornado also caps the whole header block at 64 KiB "
        "(its max_header_size) and closes the connection past it without an answer.",
        "Workers",
        metavar="BYTES",
    ),
    Setting(
        "max_requests",
        ("--max-requests",),
        _int_at_least(0),
        0,
        "Replace a worker after it served this many requests (0: never). The replacement "
        "starts first; the old worker then drains, so no request fails.",
        "Workers",
        metavar="INT",
    ),
    Setting(
        "max_requests_jitter",
        ("--max-requests-jitter",),
        _int_at_least(0),
        0,
        "Add a random 0..N to each worker's --max-requests, so workers do not all restart at once.",
        "Workers",
        metavar="INT",
    ),
    # -- database
    Setting(
        "db_boot_timeout",
        ("--db-boot-timeout",),
        _seconds(0, exclusive=True),
        5.0,
        "At boot each worker opens every pool (min_size connections, at least one to check "
        "the server answers) and waits this long for it.",
        "Database",
        metavar="SECONDS",
    ),
    Setting(
        "require_db",
        ("--require-db",),
        _boolean,
        False,
        "Exit (code 6, DATABASE_UNAVAILABLE) when a database does not answer at boot. Without "
        "it workers start anyway: pages that need the database answer 503 (with "
        "greenpool.middleware.DatabaseUnavailableMiddleware) until it is back.",
        "Database",
        kind="flag",
    ),
    Setting(
        "hosts",
        ("--hosts",),
        _int_at_least(1),
        1,
        "App hosts that run this same greenpool-serve against the same databases (a fleet behind "
        "one nginx). The connection budget counts each host's pools this many times.",
        "Database",
        metavar="INT",
    ),
    Setting(
        "connection_budget",
        ("--connection-budget",),
        _share,
        0.8,
        "At start, the first worker weighs every database server: hosts x (workers + 1) x max_size "
        "(summed over the aliases on that server) against the connections it has free "
        "(max_connections, and the account's max_user_connections, less those in use). Above this "
        "share of what is free it logs a warning naming the numbers (docs/scaling.md).",
        "Database",
        metavar="SHARE",
    ),
    Setting(
        "strict_connection_budget",
        ("--strict-connection-budget",),
        _boolean,
        False,
        "Refuse to start (exit 3, CONFIG_ERROR) when a server's connection budget is over "
        "--connection-budget, instead of warning. --check-config checks it too.",
        "Database",
        kind="flag",
    ),
    # -- proxy
    Setting(
        "forwarded_allow_ips",
        ("--forwarded-allow-ips",),
        _ip_list,
        ["127.0.0.1", "::1"],
        "Peers trusted to set X-Forwarded-For / X-Real-IP / X-Forwarded-Proto (nginx). Their "
        "requests get REMOTE_ADDR and wsgi.url_scheme from those headers. * trusts every "
        "peer; unix-socket peers are always trusted.",
        "Proxy",
        kind="value",
        metavar="IPS",
    ),
    # -- logging and control
    Setting(
        "access_logfile",
        ("--access-logfile",),
        _log_target,
        None,
        "Write an access log line per request here (- for standard output). Off by default.",
        "Logging",
        metavar="FILE",
    ),
    Setting(
        "error_logfile",
        ("--error-logfile",),
        _log_target,
        "-",
        "Write the server log here (- for standard error).",
        "Logging",
        metavar="FILE",
    ),
    Setting(
        "log_level",
        ("--log-level",),
        _choice("debug", "info", "warning", "error", "critical"),
        "info",
        "Level of the server log.",
        "Logging",
        choices=("debug", "info", "warning", "error", "critical"),
    ),
    Setting(
        "log_format",
        ("--log-format",),
        _choice("text", "json"),
        "text",
        "Format of the server log and the access log. text: one line per record, the time in UTC "
        "with its offset (ISO 8601); access lines in Common Log Format plus duration and worker. "
        "json: one JSON object per line (time, level, pid, worker, logger, message; access lines "
        "add remote, method, path, protocol, status, length, duration_s) for log shippers.",
        "Logging",
        choices=("text", "json"),
    ),
    Setting(
        "pid",
        ("-p", "--pid"),
        _optional_path,
        None,
        "Write the master's process id to this file (removed at exit).",
        "Logging",
        metavar="FILE",
    ),
    Setting(
        "control_dir",
        ("--control-dir",),
        _optional_path,
        None,
        "Directory for the workers' stats sockets (read by `greenpool-serve stats`). Default: "
        "<tmp>/greenpool-serve-<uid>/<first bind>.",
        "Logging",
        metavar="DIR",
        commands=("serve", "stats"),
    ),
    Setting(
        "metrics_bind",
        ("--metrics-bind",),
        _metrics_address,
        None,
        "Serve /metrics (Prometheus text or OpenMetrics) for all workers on this address, from the "
        "master: pools, checkout waits, connection holds by Django view, requests, restarts "
        "(docs/observability.md). Off by default; keep it off public interfaces.",
        "Logging",
        metavar="HOST:PORT",
    ),
)

NGINX = ("nginx-config",)

#: Settings of `greenpool-serve nginx-config` only (it also reads config, bind,
#: workers, worker_ports and keep_alive above). greenpool/launch/nginx.py renders them
#: into nginx/greenpool.conf.template, whose comments say why each directive is there.
NGINX_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "nginx_listen",
        ("--listen",),
        _listen,
        "127.0.0.1:8080",
        "Where nginx listens: PORT, HOST:PORT, [IPV6]:PORT or unix:PATH.",
        "nginx",
        metavar="ADDRESS",
        commands=NGINX,
    ),
    Setting(
        "nginx_server_name",
        ("--server-name",),
        _server_names,
        ["_"],
        "nginx server_name: the host names this server block answers (_ matches any).",
        "nginx",
        metavar="NAMES",
        commands=NGINX,
    ),
    Setting(
        "nginx_upstream_hosts",
        ("--upstream-host",),
        _hosts,
        [],
        "The app hosts nginx balances over, each running greenpool-serve with the same --bind port "
        "(and --worker-ports, --workers). Repeat the flag for more. Default: the --bind host itself "
        "(127.0.0.1 for a wildcard bind).",
        "nginx",
        kind="list",
        metavar="HOST",
        commands=NGINX,
    ),
    Setting(
        "nginx_max_fails",
        ("--max-fails",),
        _int_at_least(0),
        3,
        "Connection errors or timeouts within --fail-timeout after which nginx stops sending a "
        "worker requests for --fail-timeout (0: never).",
        "nginx",
        metavar="INT",
        commands=NGINX,
    ),
    Setting(
        "nginx_fail_timeout",
        ("--fail-timeout",),
        _seconds(0, exclusive=True),
        10.0,
        "The window in which --max-fails failures are counted, and how long a failed worker is then left out.",
        "nginx",
        metavar="SECONDS",
        commands=NGINX,
    ),
    Setting(
        "nginx_upstream_keepalive",
        ("--upstream-keepalive",),
        _int_at_least(1),
        16,
        "Idle connections to the workers that each nginx worker process keeps open for reuse.",
        "nginx",
        metavar="INT",
        commands=NGINX,
    ),
    Setting(
        "nginx_upstream_keepalive_timeout",
        ("--upstream-keepalive-timeout",),
        _seconds(0, exclusive=True),
        60.0,
        "nginx closes an idle connection to a worker after this long. Must be shorter than "
        "--keep-alive, so that nginx, not the worker, closes idle connections.",
        "nginx",
        metavar="SECONDS",
        commands=NGINX,
    ),
    Setting(
        "nginx_connect_timeout",
        ("--connect-timeout",),
        _seconds(0, exclusive=True),
        2.0,
        "proxy_connect_timeout: how long nginx waits for a worker to accept a connection. Workers "
        "accept at once (a restarting one's connections wait in the backlog), so only an app host "
        "that is gone from the network reaches it.",
        "nginx",
        metavar="SECONDS",
        commands=NGINX,
    ),
    Setting(
        "nginx_read_timeout",
        ("--read-timeout",),
        _seconds(0, exclusive=True),
        60.0,
        "proxy_read_timeout: how long nginx waits for a worker's answer (between two reads). "
        "Longer than the slowest request the application should answer.",
        "nginx",
        metavar="SECONDS",
        commands=NGINX,
    ),
    Setting(
        "nginx_client_max_body_size",
        ("--client-max-body-size",),
        _size,
        "10m",
        "Largest request body nginx passes on (413 above it). Raise it in a location of its own for upload endpoints.",
        "nginx",
        metavar="SIZE",
        commands=NGINX,
    ),
    Setting(
        "nginx_client_timeout",
        ("--client-timeout",),
        _seconds(0, exclusive=True),
        60.0,
        "client_header_timeout and client_body_timeout: how long nginx waits for a client's headers, "
        "and between two reads of its body, before it answers 408 and closes. nginx's default is 60 s; "
        "shorter frees the connections of slow or stalled clients (slowloris) sooner.",
        "nginx",
        metavar="SECONDS",
        commands=NGINX,
    ),
)

SETTINGS = SETTINGS + NGINX_SETTINGS
SETTINGS_BY_NAME = {s.name: s for s in SETTINGS}
SECTIONS = ("Application", "Sockets", "Workers", "Database", "Proxy", "Logging", "nginx")


@dataclass
class Config:
    """The resolved settings: ``config.workers``; ``sources[name]`` says where each came from."""

    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def addresses(self) -> list[Address]:
        return [parse_address(b) for b in self.values["bind"]]

    def resolved_control_dir(self) -> str:
        return self.values.get("control_dir") or default_control_dir(self.addresses[0])

    def to_json(self) -> dict[str, Any]:
        return dict(self.values)


def control_root() -> str:
    return os.path.join(tempfile.gettempdir(), f"greenpool-serve-{os.getuid()}")


#: Longest control directory name made from a --bind address; a longer one (a long
#: unix path) is shortened with a hash, so the stats socket paths in it stay under
#: the AF_UNIX limit of 107 bytes.
_SLUG_MAX = 40


def default_control_dir(address: Address) -> str:
    slug = address.slug()
    if len(slug) > _SLUG_MAX:
        digest = hashlib.sha256(str(address).encode()).hexdigest()[:12]
        slug = f"{slug[-(_SLUG_MAX - 13) :]}-{digest}"  # the end: the socket's file name
    return os.path.join(control_root(), slug)


# -- the parser ----------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


def _argparse_type(setting: Setting) -> Callable[[str], Any]:
    item = parse_address if setting.name == "bind" else None

    def convert(raw: str) -> Any:
        try:
            if setting.kind == "list" and item is not None:
                return [str(item(raw))]
            return setting.validate(raw)  # a list for kind "list": the flag's values are extended
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = setting.name
    return convert


def build_parser(command: str = "serve") -> argparse.ArgumentParser:
    """The argument parser of ``command`` ("serve" or "stats"), made from SETTINGS.

    Every option defaults to SUPPRESS, so the namespace holds only what the
    command line gave: the environment and the config file fill the rest."""
    if command == "serve":
        parser = argparse.ArgumentParser(
            prog=PROG,
            usage=f"{PROG} [OPTIONS] [APP]\n       {PROG} stats [--bind ADDRESS | --control-dir DIR] [--json]"
            f"\n       {PROG} nginx-config [OPTIONS] [--standalone] [-o FILE]",
            description="Run a Django (or any WSGI) application under gevent or Tornado: supervised "
            "worker processes, each with its own bounded MySQL connection pools.",
            epilog="Signals to the master: TERM graceful stop, INT/QUIT quick stop, HUP rolling restart, "
            "TTIN/TTOU one worker more/less.\nEvery option also reads GREENPOOL_<NAME> from the environment "
            "(e.g. GREENPOOL_WORKERS=4). Reference: docs/settings-launcher.md.",
            formatter_class=_Formatter,
            argument_default=argparse.SUPPRESS,
        )
    elif command == "nginx-config":
        parser = argparse.ArgumentParser(
            prog=f"{PROG} nginx-config",
            description="Print the nginx configuration that balances over these greenpool-serve workers: an "
            "upstream with one server per worker (--worker-ports) on each --upstream-host, and a server block "
            "that proxies to it. Give it the same --bind, --workers, --worker-ports and --keep-alive (or the "
            "same --config file) as greenpool-serve. The comments in the output say why each directive is there.",
            epilog="Include the output in nginx's http block (e.g. /etc/nginx/conf.d/greenpool.conf), or render "
            "a complete nginx.conf with --standalone and run nginx -p DIR -c DIR/nginx.conf. Reference: "
            "docs/deployment.md.",
            formatter_class=_Formatter,
            argument_default=argparse.SUPPRESS,
        )
        parser.add_argument(
            "--standalone",
            action="store_true",
            default=False,
            help="a complete nginx.conf (pid, logs and temporary files relative to nginx's -p prefix)",
        )
        parser.add_argument(
            "-o",
            "--output",
            metavar="FILE",
            default=None,
            help="write to FILE (replaced atomically) instead of standard output",
        )
    else:
        parser = argparse.ArgumentParser(
            prog=f"{PROG} stats",
            description="Print every worker's request and pool statistics of a running greenpool-serve.",
            formatter_class=_Formatter,
            argument_default=argparse.SUPPRESS,
        )
        parser.add_argument("--json", action="store_true", default=False, help="print the raw JSON of each worker")
    groups: dict[str, Any] = {}
    for setting in SETTINGS:
        if command not in setting.commands:
            continue
        group = groups.get(setting.section)
        if group is None:
            group = groups[setting.section] = parser.add_argument_group(setting.section)
        help_text = setting.help.replace("%", "%%")
        if setting.env_var:
            help_text += f" [env {setting.env_var}]"
        if setting.default not in (None, False, [], ""):
            help_text += f" (default: {_show(setting.default)})"
        if not setting.flags:
            group.add_argument(
                setting.name,
                nargs="?",
                type=_argparse_type(setting),
                metavar=setting.metavar,
                help=help_text,
                default=None,
            )
        elif setting.kind == "flag":
            action = argparse.BooleanOptionalAction if setting.env else "store_true"
            group.add_argument(*setting.flags, dest=setting.name, action=action, help=help_text)
        elif setting.kind == "list":
            group.add_argument(
                *setting.flags,
                dest=setting.name,
                action="extend",
                type=_argparse_type(setting),
                metavar=setting.metavar,
                help=help_text,
            )
        else:
            group.add_argument(
                *setting.flags,
                dest=setting.name,
                type=_argparse_type(setting),
                metavar=setting.metavar or setting.name.upper(),
                help=help_text,
                choices=None,
            )
    return parser


def _show(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# -- resolution: command line > environment > config file > default -------------


def read_config_file(path: str) -> dict[str, Any]:
    """Run a Python config file; return its settings (validated later)."""
    if not os.path.isfile(path):
        raise LaunchError(ExitCode.USAGE, f"config file {path!r} does not exist")
    try:
        namespace = runpy.run_path(path)
    except Exception as exc:
        raise LaunchError(ExitCode.USAGE, f"config file {path!r} failed to run: {type(exc).__name__}: {exc}") from None
    values = {}
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue
        values[name] = value
    return values


def resolve(given: dict[str, Any], environ: dict[str, str] | None = None, command: str = "serve") -> Config:
    """Merge the command line (``given``), the environment and the config file."""
    env = os.environ if environ is None else environ
    relevant = [s for s in SETTINGS if command in s.commands]
    values = {s.name: (list(s.default) if isinstance(s.default, list) else s.default) for s in relevant}
    sources = {s.name: "default" for s in relevant}

    config_path = given.get("config") or (
        env.get("GREENPOOL_CONFIG") if "config" in {s.name for s in relevant} else None
    )
    if config_path:
        for name, raw in read_config_file(config_path).items():
            setting = SETTINGS_BY_NAME.get(name)
            if setting is None or name == "config":
                close = [s.name for s in SETTINGS if s.name.startswith(name[:3])]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise LaunchError(ExitCode.USAGE, f"config file {config_path!r}: unknown setting {name!r}{hint}")
            if command not in setting.commands:
                continue
            try:
                values[name] = setting.validate(raw)
            except ValueError as exc:
                raise LaunchError(ExitCode.USAGE, f"config file {config_path!r}: {name} = {raw!r}: {exc}") from None
            sources[name] = f"config file {config_path}"

    for setting in relevant:
        if setting.env_var and setting.env_var in env and setting.name != "config":
            raw = env[setting.env_var]
            try:
                values[setting.name] = setting.validate(raw)
            except ValueError as exc:
                raise LaunchError(ExitCode.USAGE, f"{setting.env_var}={raw!r}: {exc}") from None
            sources[setting.name] = f"environment {setting.env_var}"
    if config_path:
        values["config"] = config_path
        sources["config"] = "command line" if given.get("config") else "environment GREENPOOL_CONFIG"

    for name, value in given.items():
        if name in values and value is not None and name != "config":
            values[name] = value
            sources[name] = "command line"

    config = Config(values, sources)
    if command == "serve":
        _cross_check(config)
    return config


def _cross_check(config: Config) -> None:
    addresses = config.addresses
    if config.reuse_port and config.worker_ports:
        raise LaunchError(
            ExitCode.USAGE,
            "--reuse-port and --worker-ports exclude each other: one port shared by the kernel, or one port per worker",
        )
    if config.reuse_port and any(a.kind == "unix" for a in addresses):
        raise LaunchError(ExitCode.USAGE, "--reuse-port needs TCP addresses; unix sockets are shared by inheritance")
    if config.reuse_port and any(a.kind == "tcp" and a.port == 0 for a in addresses):
        raise LaunchError(
            ExitCode.USAGE, "--reuse-port needs a fixed port (every worker binds the same one), not port 0"
        )
    if config.worker_ports and any(a.kind == "tcp" and a.port == 0 for a in addresses):
        raise LaunchError(
            ExitCode.USAGE, "--worker-ports needs a fixed port (worker i listens on port + i), not port 0"
        )
    if config.worker_ports:
        for a in addresses:
            if a.kind == "tcp" and a.port + config.workers - 1 > 65535:
                raise LaunchError(
                    ExitCode.USAGE, f"--worker-ports: {a} + {config.workers - 1} workers passes port 65535"
                )
    package = SERVER_PACKAGES[config.server]
    if importlib.util.find_spec(package) is None:
        raise LaunchError(
            ExitCode.USAGE,
            f"--server {config.server} runs on the {package} package, which is not installed: "
            f"pip install 'greenpool[{package}]' (or 'greenpool[serve]' for both workers)",
        )
    if len(set(map(str, addresses))) != len(addresses):
        raise LaunchError(ExitCode.USAGE, f"--bind lists an address twice: {', '.join(map(str, addresses))}")


def parse_args(
    argv: list[str] | None = None, environ: dict[str, str] | None = None, command: str = "serve"
) -> tuple[Config, argparse.Namespace]:
    """Parse ``argv`` (argparse exits with 2 on a bad flag) and resolve."""
    parser = build_parser(command)
    namespace = parser.parse_args(argv)
    return resolve(vars(namespace), environ, command), namespace


def format_config(config: Config) -> str:
    """--print-config: one line per setting."""
    width = max(len(s.name) for s in SETTINGS)
    lines = []
    for setting in SETTINGS:
        if setting.name not in config.values:
            continue
        value = config.values[setting.name]
        lines.append(f"{setting.name:<{width}} = {value!r:<28} # {config.sources.get(setting.name, 'default')}")
    return "\n".join(lines)


# -- the reference page ----------------------------------------------------------


def markdown() -> str:
    """docs/settings-launcher.md, made from SETTINGS and ExitCode."""
    out = [
        "# greenpool-serve settings",
        "",
        "<!-- Generated by `python -m greenpool.launch.config --markdown` from greenpool/launch/config.py.",
        "     Do not edit by hand: tests/test_launch_config.py fails when this file is out of date. -->",
        "",
        "Every setting can be given three ways. Highest precedence first:",
        "",
        "1. the command line flag (`--workers 4`);",
        "2. the environment variable `GREENPOOL_<NAME>` (`GREENPOOL_WORKERS=4`; lists comma-separated,",
        "   booleans as 1/0, true/false, yes/no, on/off);",
        "3. a `--config FILE` (or `GREENPOOL_CONFIG`): a Python file whose top-level names are setting",
        '   names (`workers = 4`, `bind = ["127.0.0.1:8001"]`);',
        "",
        "and otherwise the default. `greenpool-serve --print-config` shows each value and where it came from.",
        "",
    ]
    for section in SECTIONS:
        out += [f"## {section}", ""]
        if section == "nginx":
            out += [
                "Settings of `greenpool-serve nginx-config`, which prints the nginx configuration for these",
                "workers ([deployment.md](deployment.md)). It also reads `config`, `bind`, `workers`,",
                "`worker_ports` and `keep_alive` above, so it can be given the same flags or the same",
                "`--config` file as the server; `greenpool-serve` itself ignores these.",
                "",
            ]
        for s in SETTINGS:
            if s.section != section:
                continue
            flags = ", ".join(f"`{f}`" for f in s.flags) if s.flags else f"positional `{s.metavar}`"
            if s.kind == "flag" and s.env:
                flags += f" / `--no-{s.flags[-1][2:]}`"
            out.append(f"### `{s.name}`")
            out.append("")
            out.append(f"- flag: {flags}")
            if s.env_var:
                out.append(f"- environment: `{s.env_var}`")
            out.append(f"- value: {s.validator.__doc__ or 'text'}")
            default = "(none)" if s.default in (None, []) else f"`{_show(s.default)}`"
            out.append(f"- default: {default}")
            others = [c for c in s.commands if c != "serve"]
            if others:
                verb = "also read by" if "serve" in s.commands else "only for"
                out.append(f"- {verb} {' and '.join(f'`greenpool-serve {c}`' for c in others)}")
            out.append("")
            out.append(s.help)
            out.append("")
    out += [
        "## Exit codes",
        "",
        "A worker that cannot boot exits with one of these; the master then stops the other workers",
        "and exits with the same code, instead of restarting it in a loop.",
        "",
        "| code | name | meaning |",
        "| --- | --- | --- |",
    ]
    from greenpool.launch.errors import ExitCode as _EC

    for code in _EC:
        doc = _exit_code_docs().get(code.name, "")
        out.append(f"| {code.value} | `{code.name}` | {doc} |")
    out.append("")
    return "\n".join(out)


def _exit_code_docs() -> dict[str, str]:
    """The comment above each ExitCode member, read from the source."""
    import inspect

    from greenpool.launch import errors

    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(errors.ExitCode).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif "=" in stripped and not stripped.startswith(("def", "class", "#")):
            docs[stripped.split("=")[0].strip()] = " ".join(pending)
            pending = []
        else:
            pending = [] if not stripped.startswith("#") else pending
    return docs


def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--markdown"]:
        sys.stdout.write(markdown())
        return 0
    print("usage: python -m greenpool.launch.config --markdown", file=sys.stderr)
    return int(ExitCode.USAGE)


if __name__ == "__main__":
    sys.exit(main())
